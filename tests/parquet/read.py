"""Reads the agent's Parquet files with pyarrow, for tests/parquet.rs.

    read.py rows FILE OUT       each row of FILE as one JSON object a line in OUT: nulls left
                                out (as the encoders leave absent fields out), timestamps as
                                RFC 3339 with milliseconds and Z
    read.py ocsf-types FILE UID the columns of FILE against OCSF 1.8.0 class UID
                                (ocsf-json-schema): every column an attribute of the class or of
                                its object, typed as the attribute says (integer_t Int32, long_t
                                and timestamp_t Int64, string types Utf8, object_t a struct,
                                is_array a list); `unmapped` (OCSF's free-form object) a struct
    read.py meta FILE           the file's row count, compression codecs and sorting columns

Each prints one JSON object on stdout and exits 0; the Rust test decides.
"""
import datetime
import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq


def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [strip(x) for x in v]
    if isinstance(v, datetime.datetime):
        v = v.astimezone(datetime.timezone.utc)
        return v.strftime("%Y-%m-%dT%H:%M:%S.") + f"{v.microsecond // 1000:03d}Z"
    return v


def rows(path, out):
    table = pq.read_table(path)
    with open(out, "w") as f:
        for row in table.to_pylist():
            f.write(json.dumps(strip(row), ensure_ascii=False, separators=(",", ":")) + "\n")
    print(json.dumps({"rows": table.num_rows}))


def ocsf_types(path, uid):
    from ocsf_json_schema import get_ocsf_schema

    raw = get_ocsf_schema("1.8.0")
    types = raw["dictionary"]["types"]["attributes"]
    cls = next(c for c in raw["classes"].values() if c["uid"] == uid)
    errors = []

    def base(t):
        while t in types and "type" in types[t]:
            t = types[t]["type"]
        return t

    def check(field, attr, where):
        t = field.type
        if attr.get("is_array"):
            if not pa.types.is_list(t):
                errors.append(f"{where}: an array in OCSF, {t} here")
                return
            t = t.value_type
        want = attr["type"]
        if want == "object_t":
            if not pa.types.is_struct(t):
                errors.append(f"{where}: an object in OCSF, {t} here")
                return
            if attr["object_type"] == "object":
                return  # free-form: any fields
            sub = raw["objects"][attr["object_type"]]["attributes"]
            for i in range(t.num_fields):
                f = t.field(i)
                if f.name not in sub:
                    errors.append(f"{where}.{f.name}: not an attribute of {attr['object_type']}")
                else:
                    check(f, sub[f.name], f"{where}.{f.name}")
            return
        b = base(want)
        expect = {
            "integer_t": pa.int32(),
            "long_t": pa.int64(),
            "timestamp_t": pa.int64(),
            "string_t": pa.string(),
            "boolean_t": pa.bool_(),
            "float_t": pa.float64(),
        }.get(b)
        if expect is None:
            errors.append(f"{where}: OCSF type {want} ({b}) has no mapping here")
        elif t != expect:
            errors.append(f"{where}: {want} is {expect} in Parquet, {t} here")

    schema = pq.read_schema(path)
    for f in schema:
        a = cls["attributes"].get(f.name)
        if a is None:
            errors.append(f"{f.name}: not an attribute of class {uid}")
        else:
            check(f, a, f.name)
    print(json.dumps({"columns": len(schema), "errors": errors}))


def meta(path):
    md = pq.ParquetFile(path).metadata
    codecs = set()
    sorting = []
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        for c in range(rg.num_columns):
            codecs.add(rg.column(c).compression)
        for s in rg.sorting_columns or ():
            sorting.append([md.schema.column(s.column_index).path, s.descending])
    print(json.dumps({"rows": md.num_rows, "codecs": sorted(codecs), "sorting": sorting,
                      "format_version": md.format_version}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "rows":
        rows(sys.argv[2], sys.argv[3])
    elif cmd == "ocsf-types":
        ocsf_types(sys.argv[2], int(sys.argv[3]))
    elif cmd == "meta":
        meta(sys.argv[2])
    else:
        sys.exit(f"unknown command {cmd}")
