"""An OTLP/HTTP logs receiver for tests/otlp_sink.rs that decodes every request with the
official protobuf definitions (PyPI opentelemetry-proto, on PyPI protobuf): binary protobuf with
ExportLogsServiceRequest.ParseFromString, OTLP/JSON with google.protobuf.json_format.Parse into
the same message type (strict: an unknown or misspelt key, a wrong type, is a 400), gzip per
Content-Encoding. What it decoded is kept per scope (the first path segment, one per test) and
read back as JSON; answers are scripted per scope (a status with Retry-After, or a 200 with a
partial_success).

Usage: receiver.py PORT_FILE [--count] — binds 127.0.0.1:0 and writes the port to PORT_FILE.
With --count (benches/otlp.py) every request is still decoded, but only the records are
counted: GET /_count says how many; POST /_null takes NDJSON (the HTTP sink's, a baseline)
and counts its lines.
"""

import gzip
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

LOCK = threading.Lock()
COUNT_ONLY = "--count" in sys.argv[2:]
COUNTED = [0, 0]  # records, requests
# scope -> {"records": [...], "requests": [...], "script": [...]}
SCOPES = {}


def scope(name):
    return SCOPES.setdefault(name, {"records": [], "requests": [], "script": []})


def any_value(v):
    """An AnyValue as the plain value it carries."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "kvlist_value":
        out = {}
        for kv in v.kvlist_value.values:
            if kv.key in out:
                raise ValueError(f"key {kv.key!r} twice in a kvlist")
            out[kv.key] = any_value(kv.value)
        return out
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "bytes_value":
        raise ValueError("bytes_value is not expected")
    return getattr(v, kind)


def attributes(kvs):
    out = {}
    for kv in kvs:
        if kv.key in out:
            raise ValueError(f"attribute {kv.key!r} twice")
        out[kv.key] = any_value(kv.value)
    return out


def records(req, encoding, gzipped):
    out = []
    for rl in req.resource_logs:
        resource = attributes(rl.resource.attributes)
        for sl in rl.scope_logs:
            for r in sl.log_records:
                out.append({
                    "encoding": encoding,
                    "gzip": gzipped,
                    "resource": resource,
                    "scope": {"name": sl.scope.name, "version": sl.scope.version},
                    "time_unix_nano": str(r.time_unix_nano),
                    "observed_time_unix_nano": str(r.observed_time_unix_nano),
                    "severity_number": r.severity_number,
                    "severity_text": r.severity_text,
                    "body": any_value(r.body),
                    "attributes": attributes(r.attributes),
                })
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", ctype="application/json", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        # /_scope/NAME: what the scope received.
        parts = self.path.strip("/").split("/")
        if parts == ["_count"]:
            with LOCK:
                body = json.dumps({"records": COUNTED[0], "requests": COUNTED[1]})
            return self.answer(200, body.encode())
        if len(parts) == 2 and parts[0] == "_scope":
            with LOCK:
                s = scope(parts[1])
                body = json.dumps({"records": s["records"], "requests": s["requests"]})
            return self.answer(200, body.encode())
        self.answer(404)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(length)
        parts = self.path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "_script":
            with LOCK:
                scope(parts[1])["script"] = json.loads(data)
            return self.answer(200)
        if parts == ["_null"] and COUNT_ONLY:
            # benches/otlp.py's baseline: an HTTP sink's NDJSON, counted by its lines.
            with LOCK:
                COUNTED[0] += data.count(b"\n")
                COUNTED[1] += 1
            return self.answer(200)
        if len(parts) != 3 or parts[1:] != ["v1", "logs"]:
            return self.answer(404)
        ctype = self.headers.get("Content-Type", "")
        gzipped = self.headers.get("Content-Encoding", "") == "gzip"
        with LOCK:
            s = scope(parts[0])
            step = s["script"].pop(0) if s["script"] else {"status": 200}
        seen = {
            "at": time.time(),
            "status": step["status"],
            "content_type": ctype,
            "gzip": gzipped,
            "headers": {k.lower(): v for k, v in self.headers.items()},
        }
        try:
            raw = gzip.decompress(data) if gzipped else data
            req = ExportLogsServiceRequest()
            if ctype == "application/x-protobuf":
                encoding = "protobuf"
                req.ParseFromString(raw)
            elif ctype == "application/json":
                encoding = "json"
                json_format.Parse(raw.decode("utf-8"), req)
            else:
                raise ValueError(f"content type {ctype!r}")
            if COUNT_ONLY:
                n = sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs)
                with LOCK:
                    COUNTED[0] += n
                    COUNTED[1] += 1
                ok = b"" if encoding == "protobuf" else b"{}"
                ct = "application/x-protobuf" if encoding == "protobuf" else "application/json"
                return self.answer(200, ok, ct)
            got = records(req, encoding, gzipped)
        except Exception as e:  # a request the official definitions refuse: the test fails
            seen["status"] = 400
            seen["error"] = f"{type(e).__name__}: {e}"
            with LOCK:
                s["requests"].append(seen)
            return self.answer(400, json.dumps({"message": seen["error"]}).encode())
        seen["records"] = len(got)
        with LOCK:
            s["requests"].append(seen)
            if step["status"] == 200:
                s["records"].extend(got)
        if step["status"] != 200:
            headers = [("Retry-After", step["retry_after"])] if "retry_after" in step else []
            return self.answer(step["status"], b'{"message":"scripted refusal"}', headers=headers)
        resp = ExportLogsServiceResponse()
        if "rejected" in step:
            resp.partial_success.rejected_log_records = step["rejected"]
            resp.partial_success.error_message = step.get("message", "")
        if encoding == "protobuf":
            self.answer(200, resp.SerializeToString(), "application/x-protobuf")
        else:
            self.answer(200, json_format.MessageToJson(resp).encode(), "application/json")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True

    # The test binary holds our stdin: when it exits, so do we.
    def watch():
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
