#!/usr/bin/env python3
"""Throughput of the OTLP sink into tests/otlp/receiver.py (which decodes every request with the
official definitions, PyPI opentelemetry-proto; here in --count mode: decoded, counted, not
kept). The release binary's `run --once` over the four emulated vendors into: a file sink alone
(the baseline: reading, dedupe, the state), an HTTP sink's NDJSON (the queue and HTTP, no
OTLP), then an OTLP sink alone, protobuf, protobuf+gzip,
and JSON. Reports events/s, the agent's CPU µs per event (user+sys from wait4) and the
receiver's. The receiver is Python: where its CPU per event nears the wall time per event, it is
the bottleneck, not the agent.

    bash tests/venv.sh target/otlp-venv tests/otlp/requirements.txt
    python3 benches/otlp.py --events 50000 --runs 3
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402

ROOT = e2e.ROOT
VENV_PY = os.path.join(ROOT, "target", "otlp-venv", "bin", "python")


class Receiver:
    def __init__(self):
        self.dir = tempfile.mkdtemp()
        port_file = os.path.join(self.dir, "port")
        self.p = subprocess.Popen([VENV_PY, os.path.join(ROOT, "tests/otlp/receiver.py"),
                                   port_file, "--count"], stdin=subprocess.PIPE)
        while not os.path.exists(port_file):
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{open(port_file).read().strip()}"

    def count(self):
        with urllib.request.urlopen(self.url + "/_count", timeout=10) as r:
            return json.load(r)

    def close(self):
        self.p.terminate()
        self.p.wait()


def run(sim, start, sink, receiver):
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "c.toml")
        with open(cfg, "w") as f:
            f.write('[agent]\nstate_path = "state.db"\nlag = "1s"\n\n')
            for v in e2e.VENDORS:
                f.write(e2e.source_toml(v, sim.url, start))
            f.write(sink.replace("RECEIVER", receiver.url))
        before = receiver.count()["records"]
        rcpu0 = e2e.proc_cpu(receiver.p.pid)
        t0 = time.monotonic()
        p = subprocess.Popen([e2e.AGENT, "run", "--once", "--config", cfg],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env={**os.environ, "AUDITSHIP_LOG": "warn", "NO_PROXY": "127.0.0.1"})
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        if status != 0:
            raise SystemExit(p.stderr.read().decode())
        got = receiver.count()["records"] - before
        if "kind = \"file\"" in sink:
            got = e2e.count_lines(os.path.join(d, "out.ndjson"))
        return wall, ru.ru_utime + ru.ru_stime, e2e.proc_cpu(receiver.p.pid) - rcpu0, got


SINKS = [
    ("file (baseline)", '[[sinks]]\nname = "file"\nkind = "file"\npath = "out.ndjson"\n'
                        'fsync = false\n'),
    ("http ndjson (no OTLP)", '[[sinks]]\nname = "h"\nkind = "http"\nurl = "RECEIVER/_null"\n'),
    ("otlp protobuf", '[[sinks]]\nname = "otel"\nkind = "otlp"\nurl = "RECEIVER/b/v1/logs"\n'),
    ("otlp protobuf gzip", '[[sinks]]\nname = "otel"\nkind = "otlp"\n'
                           'url = "RECEIVER/b/v1/logs"\ncompression = "gzip"\n'),
    ("otlp json", '[[sinks]]\nname = "otel"\nkind = "otlp"\nurl = "RECEIVER/b/v1/logs"\n'
                  'encoding = "json"\n'),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=50000, help="per vendor")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="", help="rows whose name holds this")
    args = ap.parse_args()
    sim = e2e.Sim(e2e.VENDORS, args.events, 30)
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 31 * 86400))
    receiver = Receiver()
    print(f"| sink | events | events/s | agent CPU µs/event | receiver CPU µs/event |")
    print("| --- | --- | --- | --- | --- |")
    try:
        for name, sink in [r for r in SINKS if args.only in r[0]]:
            rows = [run(sim, start, sink, receiver) for _ in range(args.runs)]
            wall = statistics.median(r[0] for r in rows)
            cpu = statistics.median(r[1] for r in rows)
            rcpu = statistics.median(r[2] for r in rows)
            got = rows[-1][3]
            n = got
            print(f"| {name} | {n:,} | {n / wall:,.0f} | {cpu / n * 1e6:.2f} | "
                  f"{'' if name.startswith('file') else f'{rcpu / n * 1e6:.2f}'} |", flush=True)
    finally:
        receiver.close()
        sim.close()


if __name__ == "__main__":
    main()
