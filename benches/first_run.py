#!/usr/bin/env python3
"""First-run benchmark: `run --once` from a far `start` against a few days of data.

A first run whose `start` lies years before the data must cost requests in proportion to the
events, not to the span (DESIGN.md, "Cursor"). For each emulator latency in --latencies this
starts one `auditship simulate` serving all four vendors, --events events each spread over the
last --span-days days (the span ends when the emulator starts), with that per-request latency
(`simulate --latency`). Against it, it runs `auditship run --once` twice, each with a fresh state
and a file sink, all four sources in one config:

  far   every source from --far-start (default 2020-01-01T00:00:00Z)
  near  every source from now - --near-days (default 6 days: just before the data)

For each run it reports the wall time, the requests each vendor served (the difference of
`/_sim/stats` before and after; Domo's token requests counted apart, in `tokens`) and their
total, and the lines written against the emulator's truth (`/_sim/events` of each vendor over
the whole span). A run that does not write exactly the truth, each event once, is reported as
wrong; a run that exceeds --timeout is stopped (SIGTERM, then SIGKILL) and reported as timed
out, with what it had done by then. The targets (issue: first run from a far start): the far
run's time at most 1.5 times the near run's, and at most 600 requests in all for the far run.

    python3 benches/first_run.py                          # 0 ms and 20 ms, builds the release binary
    python3 benches/first_run.py --no-build --latencies 0ms --timeout 60
    python3 benches/first_run.py --no-build --bin /tmp/auditship.old   # another build, same emulator
    python3 benches/first_run.py --check                  # exit 1 unless every target is met
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "auditship")
AGENT = BIN  # the binary measured (--bin); the emulator is always BIN
VENDORS = ["domino_audit", "domino_datasource", "domo", "wasabi_air"]
LAG_S = 1  # the agent's lag: the run reads up to now - 1 s, so it sees the whole span
MAX_RATIO = 1.5
MAX_REQUESTS = 600


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url, timeout=60):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)


def rfc3339(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class Sim:
    """One emulator serving every vendor; its span ends when it starts."""

    def __init__(self, events, span_days, latency, seed):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.p = subprocess.Popen(
            [BIN, "simulate", "--listen", f"127.0.0.1:{self.port}", "--events", str(events),
             "--vendors", ",".join(VENDORS), "--span", f"{span_days}d", "--seed", str(seed),
             "--latency", latency],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.p.stdout.readline()
        if "listening" not in line:
            raise SystemExit(f"simulator did not start: {line!r}")
        # The span ends at the emulator's "now", taken before it generated its events and so
        # before this line was printed: a run that starts LAG_S after it reads the whole span.
        self.ready_at = time.monotonic() + LAG_S + 0.5

    def stats(self):
        return get_json(self.url + "/_sim/stats")

    def truth(self):
        """Every visible event of each vendor (no bounds: the whole span)."""
        return {v: len(get_json(f"{self.url}/_sim/events?vendor={v}")) for v in VENDORS}

    def close(self):
        self.p.terminate()
        self.p.wait()


def config(d, url, start):
    """The agent's config: its defaults but for a short lag and overlap (as the tests have), so
    that the run reads right up to the end of the span and ends promptly."""
    cfg = os.path.join(d, "auditship.toml")
    with open(cfg, "w") as f:
        f.write(f'[agent]\nstate_path = "state.db"\nlag = "{LAG_S}s"\noverlap = "10s"\n\n')
        for v in VENDORS:
            auth = ('client_id = "sim-client"\nclient_secret = "sim-secret"\n' if v == "domo"
                    else 'api_key = "sim-api-key"\n')
            f.write(f'[[sources]]\nname = "{v.replace("_", "-")}"\nkind = "{v}"\n'
                    f'url = "{url}"\nstart = "{start}"\n{auth}\n')
        f.write('[[sinks]]\nname = "file"\nkind = "file"\npath = "out.ndjson"\n')
    return cfg


def written(path):
    """Lines written per vendor, and how many of them repeat an id already seen."""
    lines = {v: 0 for v in VENDORS}
    ids, repeats = set(), 0
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return lines, 0
    with f:
        for line in f:
            e = json.loads(line)
            lines[e["kind"]] = lines.get(e["kind"], 0) + 1
            key = (e["kind"], e["id"])
            if key in ids:
                repeats += 1
            ids.add(key)
    return lines, repeats


def run_once(sim, start, timeout):
    delay = sim.ready_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    with tempfile.TemporaryDirectory() as d:
        cfg = config(d, sim.url, start)
        before = sim.stats()
        t0 = time.monotonic()
        p = subprocess.Popen([AGENT, "run", "--once", "--config", cfg], cwd=d,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env={**os.environ, "AUDITSHIP_LOG": "warn"})
        timed_out = False
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if not timed_out and time.monotonic() - t0 > timeout:
                timed_out = True
                p.send_signal(signal.SIGTERM)  # finish the batch in flight and commit
                killed_at = time.monotonic()
            if timed_out and time.monotonic() - killed_at > 10:
                p.kill()
            time.sleep(0.01)
        wall = time.monotonic() - t0
        err = p.stderr.read().decode(errors="replace")
        p.stderr.close()
        after = sim.stats()
        lines, repeats = written(os.path.join(d, "out.ndjson"))
    req = {v: after["requests"].get(v, 0) - before["requests"].get(v, 0) for v in VENDORS}
    tokens = after["tokens_issued"] - before["tokens_issued"]
    code = os.waitstatus_to_exitcode(status)
    return {
        "start": start, "wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime,
        "exit": code, "timed_out": timed_out, "requests": req, "tokens": tokens,
        "total_requests": sum(req.values()) + tokens, "lines": lines, "repeats": repeats,
        "stderr_tail": err.strip().splitlines()[-5:],
    }


def verdict(run, truth):
    if run["timed_out"]:
        return "timed out"
    if run["exit"] != 0:
        return f"failed (exit {run['exit']})"
    if run["lines"] != truth or run["repeats"]:
        return "wrong"
    return "ok"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latencies", default="0ms,20ms",
                    help="emulator per-request latencies, humantime, comma-separated")
    ap.add_argument("--events", type=int, default=20000, help="events per vendor")
    ap.add_argument("--span-days", type=int, default=5, help="days the events cover, up to now")
    ap.add_argument("--far-start", default="2020-01-01T00:00:00Z")
    ap.add_argument("--near-days", type=int, default=6, help="the near run starts this far back")
    ap.add_argument("--timeout", type=float, default=900, help="seconds a run may take")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--bin", help="measure this agent binary instead of the release build")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless every run is right and every target is met")
    a = ap.parse_args()
    global AGENT
    if a.bin:
        AGENT = os.path.abspath(a.bin)
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    print(f"machine: {os.cpu_count()} cores, {os.uname().release}; {a.events} events per vendor "
          f"over {a.span_days} days, all four vendors; timeout {a.timeout:.0f} s a run", flush=True)

    results, rows, met = [], [], True
    for latency in a.latencies.split(","):
        latency = latency.strip()
        sim = Sim(a.events, a.span_days, latency, a.seed)
        try:
            truth = sim.truth()
            near_start = rfc3339(datetime.now(timezone.utc) - timedelta(days=a.near_days))
            runs = {}
            for label, start in [("far", a.far_start), ("near", near_start)]:
                r = run_once(sim, start, a.timeout)
                r["verdict"] = verdict(r, truth)
                runs[label] = r
                print(f"latency {latency:>5}  {label:4} from {start}: {r['verdict']}, "
                      f"{r['wall_s']:.1f} s, {r['total_requests']} requests "
                      f"{json.dumps(r['requests'])}, {r['tokens']} tokens, "
                      f"{sum(r['lines'].values())}/{sum(truth.values())} lines", flush=True)
                if r["verdict"] not in ("ok", "timed out"):
                    for l in r["stderr_tail"]:
                        print(f"    {l}")
        finally:
            sim.close()
        far, near = runs["far"], runs["near"]
        ratio = far["wall_s"] / near["wall_s"]
        ok_ratio = far["verdict"] == "ok" and near["verdict"] == "ok" and ratio <= MAX_RATIO
        ok_req = far["verdict"] == "ok" and far["total_requests"] <= MAX_REQUESTS
        met = met and ok_ratio and ok_req
        results.append({"latency": latency, "truth": truth, "far": far, "near": near,
                        "ratio": ratio, "ratio_met": ok_ratio, "requests_met": ok_req})
        for label, r in [("far", far), ("near", near)]:
            rows.append((latency, f"{label} ({r['start'][:10]})", r, truth))

    print()
    print("| latency | start | wall s | " + " | ".join(VENDORS)
          + " | tokens | requests | lines / truth | result |")
    print("|---" * (len(VENDORS) + 7) + "|")
    for latency, label, r, truth in rows:
        wall = f"{r['wall_s']:.1f}" + (" (killed)" if r["timed_out"] else "")
        lines = f"{sum(r['lines'].values()):,} / {sum(truth.values()):,}"
        if r["repeats"]:
            lines += f" ({r['repeats']} repeated)"
        print(f"| {latency} | {label} | {wall} | "
              + " | ".join(f"{r['requests'][v]:,}" for v in VENDORS)
              + f" | {r['tokens']} | {r['total_requests']:,} | {lines} | {r['verdict']} |")
    print()
    for x in results:
        far = x["far"]
        bound = "≥ " if far["timed_out"] else ""
        print(f"latency {x['latency']}: far/near time {bound}{x['ratio']:.2f} "
              f"(target ≤ {MAX_RATIO}: {'met' if x['ratio_met'] else 'NOT met'}); "
              f"far run {bound}{far['total_requests']:,} requests "
              f"(target ≤ {MAX_REQUESTS}: {'met' if x['requests_met'] else 'NOT met'})")
    print("targets: " + ("all met" if met else "NOT all met"))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
    return 1 if a.check and not met else 0


if __name__ == "__main__":
    sys.exit(main())
