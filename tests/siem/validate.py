"""Validates SIEM records, one JSON object a line, against the standards' own references.

    validate.py ocsf FILE              OCSF 1.8.0: the class's JSON Schema (ocsf-json-schema),
                                       plus type_uid, category_uid, version, captions, no null
    validate.py ecs FILE ECS_FLAT NS.. ECS: every field in ECS's flat field reference (or under
                                       one of the vendor namespaces NS), its type, the allowed
                                       values of event.kind/category/type/outcome

Prints {"events": N, "errors": [{"line": I, "error": "..."}, ...]} and exits 0; the Rust test
decides. Every line's errors are reported, so a test can show that a given line is refused.
"""
import datetime
import ipaddress
import json
import sys


def nulls(v, path=""):
    if v is None:
        yield path or "."
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield from nulls(x, f"{path}[{i}]")
    elif isinstance(v, dict):
        for k, x in v.items():
            yield from nulls(x, f"{path}.{k}" if path else k)


def ocsf(path):
    import jsonschema
    from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

    raw = get_ocsf_schema("1.8.0")
    schema = OcsfJsonSchemaEmbedded(raw)
    by_uid = {c["uid"]: (name, c) for name, c in raw["classes"].items()}
    categories = {c["uid"]: c["caption"] for c in raw["categories"]["attributes"].values()}
    validators = {}

    def captions(obj, attrs, where):
        """Every `X_id` with an enum whose sibling `X` is present names the id's caption."""
        for k, v in obj.items():
            a = attrs.get(k)
            if a is None:
                continue
            sib = a.get("sibling")
            if sib and "enum" in a and sib in obj and v != 99:
                want = a["enum"].get(str(v), {}).get("caption")
                if obj[sib] != want:
                    yield f"{where}{sib} is {obj[sib]!r}, the caption of {k}={v} is {want!r}"
            if a.get("type") == "object_t" and a.get("object_type") in raw["objects"]:
                sub = raw["objects"][a["object_type"]]["attributes"]
                for i, x in enumerate(v if isinstance(v, list) else [v]):
                    if isinstance(x, dict):
                        yield from captions(x, sub, f"{where}{k}{f'[{i}]' if isinstance(v, list) else ''}.")

    def check(e):
        errs = [f"null at {p}" for p in nulls(e)]
        uid = e.get("class_uid")
        if uid not in by_uid:
            return errs + [f"class_uid {uid!r} is not an OCSF 1.8.0 class"]
        name, cls = by_uid[uid]
        if name not in validators:
            validators[name] = jsonschema.Draft202012Validator(schema.get_class_schema(name))
        errs += [f"schema: {'/'.join(map(str, x.absolute_path))}: {x.message}"
                 for x in validators[name].iter_errors(e)]
        act = e.get("activity_id")
        if e.get("type_uid") != uid * 100 + (act if isinstance(act, int) else 0):
            errs.append(f"type_uid {e.get('type_uid')} != class_uid*100 + activity_id")
        if e.get("category_uid") != cls["category_uid"]:
            errs.append(f"category_uid {e.get('category_uid')} is not class {uid}'s {cls['category_uid']}")
        if e.get("class_name") != cls["caption"]:
            errs.append(f"class_name {e.get('class_name')!r} != {cls['caption']!r}")
        if e.get("category_name") != categories.get(cls["category_uid"]):
            errs.append(f"category_name {e.get('category_name')!r} != {categories.get(cls['category_uid'])!r}")
        if (e.get("metadata") or {}).get("version") != "1.8.0":
            errs.append("metadata.version is not 1.8.0")
        t = e.get("time")
        if not isinstance(t, int) or t < 10**11:
            errs.append(f"time {t!r} is not epoch milliseconds")
        if act == 99 and not e.get("activity_name"):
            errs.append("activity 99 without the vendor's activity_name")
        # type_name's caption is by type_uid, except for Other (99) whose sibling is free.
        tu = cls["attributes"]["type_uid"]["enum"].get(str(e.get("type_uid")), {}).get("caption")
        if tu is None:
            errs.append(f"type_uid {e.get('type_uid')} is not one of class {uid}")
        elif e.get("type_name") != tu:
            errs.append(f"type_name {e.get('type_name')!r} != {tu!r}")
        errs += list(captions(e, cls["attributes"], ""))
        return errs

    return check


ECS_TYPES = {
    "keyword": str, "constant_keyword": str, "wildcard": str, "match_only_text": str,
    "text": str, "flattened": dict, "object": dict, "boolean": bool, "long": int,
    "integer": int, "short": int, "byte": int, "float": (int, float),
    "double": (int, float), "scaled_float": (int, float), "unsigned_long": int,
}


def ecs(flat_path, namespaces):
    flat = json.load(open(flat_path))
    allowed = {k: {a["name"]: a for a in flat[k]["allowed_values"]}
               for k in ("event.kind", "event.category", "event.type", "event.outcome")}

    def leaves(v, path):
        if isinstance(v, dict) and path not in flat:
            for k, x in v.items():
                yield from leaves(x, f"{path}.{k}" if path else k)
        else:
            yield path, v

    def check(d):
        errs = [f"null at {p}" for p in nulls(d)]
        for must in ("@timestamp", "ecs", "event"):
            if must not in d:
                errs.append(f"missing {must}")
        for key, v in leaves(d, ""):
            if key.split(".")[0] in namespaces:
                continue
            f = flat.get(key)
            if f is None:
                errs.append(f"{key} is not an ECS field")
                continue
            is_array = "array" in f.get("normalize", [])
            vs = v if isinstance(v, list) else [v]
            if isinstance(v, list) and not is_array:
                errs.append(f"{key} is an array, ECS says one value")
            if is_array and not isinstance(v, list):
                errs.append(f"{key} is one value, ECS says an array")
            for x in vs:
                ty = f["type"]
                if ty == "date":
                    try:
                        datetime.datetime.fromisoformat(x.replace("Z", "+00:00"))
                    except Exception:
                        errs.append(f"{key} {x!r} is not a date")
                elif ty == "ip":
                    try:
                        ipaddress.ip_address(x)
                    except Exception:
                        errs.append(f"{key} {x!r} is not an ip")
                elif ty in ECS_TYPES:
                    if not isinstance(x, ECS_TYPES[ty]) or (ty != "boolean" and isinstance(x, bool)):
                        errs.append(f"{key} {x!r} is not of ECS type {ty}")
                else:
                    errs.append(f"{key}: ECS type {ty} not checked by this validator")
                if key in allowed and x not in allowed[key]:
                    errs.append(f"{key} {x!r} is not an allowed value")
        ev = d.get("event", {})
        for cat in ev.get("category", []):
            expected = allowed["event.category"].get(cat, {}).get("expected_event_types")
            for ty in ev.get("type", []):
                if expected is not None and ty not in expected:
                    errs.append(f"event.type {ty!r} is not expected with event.category {cat!r}")
        for k in ("kind", "category", "type", "action", "id", "module", "dataset", "created"):
            if k not in ev:
                errs.append(f"missing event.{k}")
        return errs

    return check


def main():
    kind, path = sys.argv[1], sys.argv[2]
    check = ocsf(path) if kind == "ocsf" else ecs(sys.argv[3], set(sys.argv[4:]))
    n, errors = 0, []
    with open(path) as f:
        for i, line in enumerate(f):
            n += 1
            try:
                e = json.loads(line)
            except ValueError as err:
                errors.append({"line": i, "error": f"not JSON: {err}"})
                continue
            for err in check(e):
                errors.append({"line": i, "error": err})
    json.dump({"events": n, "errors": errors}, sys.stdout)


main()
