#!/usr/bin/env python3
"""End-to-end benchmark: the release binary's `run --once` against the built-in emulator.

For each vendor and size it starts `auditship simulate` serving a fixed data set (pre-rendered,
seeded), runs `auditship run --once` into a file sink with a fresh state, and reports events/s,
CPU microseconds per event (user+sys of the agent process alone, from wait4), the agent's peak
RSS, the emulator's CPU, and the requests made. Each figure is the median of --runs runs.
Then, with --idle SECONDS, it measures four sources polling every 60 s, once their first catch-up
is written: CPU share and RSS.

    python3 benches/e2e.py                      # 100k and 1M of every vendor, 3 runs each
    python3 benches/e2e.py --sizes 100000 --vendors wasabi_air --runs 1
    python3 benches/e2e.py --sizes 100000 --runs 1 --callgrind   # + instructions per event
    python3 benches/e2e.py --no-build --bin /tmp/auditship.old    # an earlier build, same emulator
    python3 benches/e2e.py --no-build --sizes 300000 --runs 5 \
        --ab old=/tmp/auditship.old,new=target/release/auditship,ocsf=target/release/auditship:ocsf
        # an A/B: variants (a binary and the file sink's format) run round by round on one
        # emulator per vendor, median CPU per event of each
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "auditship")
AGENT = BIN  # the binary measured (--bin); the emulator is always BIN
VENDORS = ["wasabi_air", "domino_audit", "domo", "domino_datasource"]
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu(pid):
    """User+sys CPU seconds of a running process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_hwm_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def proc_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def stats(url):
    with urllib.request.urlopen(url + "/_sim/stats", timeout=10) as r:
        return json.load(r)


class Sim:
    def __init__(self, vendors, events, span_days, seed=7):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.p = subprocess.Popen(
            [BIN, "simulate", "--listen", f"127.0.0.1:{self.port}", "--events", str(events),
             "--vendors", ",".join(vendors), "--span", f"{span_days}d", "--seed", str(seed),
             "--twin-fraction", "0.02"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.p.stdout.readline()
        if "listening" not in line:
            raise SystemExit(f"simulator did not start: {line!r}")

    def close(self):
        self.p.terminate()
        self.p.wait()


def source_toml(vendor, url, start):
    auth = ('client_id = "sim-client"\nclient_secret = "sim-secret"\n' if vendor == "domo"
            else 'api_key = "sim-api-key"\n')
    return (f'[[sources]]\nname = "{vendor.replace("_", "-")}"\nkind = "{vendor}"\n'
            f'url = "{url}"\nstart = "{start}"\n{auth}\n')


def run_once(vendor, sim, start, fsync, callgrind=False, agent=None, fmt=None):
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "c.toml")
        with open(cfg, "w") as f:
            f.write('[agent]\nstate_path = "state.db"\nlag = "1s"\n\n')
            f.write(source_toml(vendor, sim.url, start))
            f.write(f'[[sinks]]\nname = "file"\nkind = "file"\npath = "out.ndjson"\n'
                    f'fsync = {"true" if fsync else "false"}\n')
            if fmt:
                f.write(f'format = "{fmt}"\n')
        before_req = sum(stats(sim.url)["requests"].values())
        sim_cpu0 = proc_cpu(sim.p.pid)
        t0 = time.monotonic()
        wrap = (["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
                if callgrind else [])
        p = subprocess.Popen(wrap + [agent or AGENT, "run", "--once", "--config", cfg],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env={**os.environ, "AUDITSHIP_LOG": "warn"})
        # ru_maxrss of a forked child keeps the parent's (Python's) RSS from before exec, so the
        # agent's own peak is read from /proc/PID/status (VmHWM) while it runs.
        hwm = 0
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            hwm = max(hwm, proc_hwm_kb(p.pid))
            time.sleep(0.005)
        wall = time.monotonic() - t0
        err = p.stderr.read().decode()
        if status != 0:
            raise SystemExit(f"{vendor}: run --once failed ({status}): {err}")
        lines = sum(1 for _ in open(os.path.join(d, "out.ndjson"), "rb"))
        if callgrind:
            # "Collected : N": user-space instructions, the same whatever the neighbours do.
            n = next(int(l.split(":")[1]) for l in err.splitlines() if "Collected :" in l)
            return {"events": lines, "instructions": n}
        return {
            "events": lines,
            "wall": wall,
            "cpu": ru.ru_utime + ru.ru_stime,
            "rss_mb": hwm / 1024,
            "sim_cpu": proc_cpu(sim.p.pid) - sim_cpu0,
            "requests": sum(stats(sim.url)["requests"].values()) - before_req,
        }


def bench(vendors, sizes, runs, fsync, callgrind=False):
    rows = []
    for vendor in vendors:
        for n in sizes:
            days = int(os.environ.get("BENCH_DAYS", "30"))
            sim = Sim([vendor], n, days)
            start = (datetime.now(timezone.utc) - timedelta(days=days, hours=1)).strftime(
                "%Y-%m-%dT%H:%M:%SZ")
            try:
                res = [run_once(vendor, sim, start, fsync) for _ in range(runs)]
                ir = run_once(vendor, sim, start, fsync, True) if callgrind else None
            finally:
                sim.close()
            med = lambda k: statistics.median(r[k] for r in res)
            ev = med("events")
            row = {
                "vendor": vendor, "events": int(ev),
                "events_per_s": ev / med("wall"),
                "cpu_us_per_event": med("cpu") / ev * 1e6,
                "peak_rss_mb": med("rss_mb"),
                "requests": int(med("requests")),
                "sim_cpu_s": med("sim_cpu"),
                "wall_s": med("wall"),
            }
            if ir:
                row["instructions_per_event"] = ir["instructions"] / ir["events"]
            rows.append(row)
            print(f"{vendor:18} {int(ev):>8} events  {row['events_per_s']:>9.0f} ev/s  "
                  f"{row['cpu_us_per_event']:6.2f} us/ev CPU  {row['peak_rss_mb']:6.1f} MB peak  "
                  f"{row['requests']:>6} requests  emulator {row['sim_cpu_s']:.2f}s CPU"
                  + (f"  {row['instructions_per_event']:,.0f} instructions/event" if ir else ""),
                  flush=True)
    return rows


def ab(variants, vendors, sizes, runs, fsync):
    """Each variant (name, binary, format) once per round, rounds interleaved, on one emulator
    per vendor and size; the median CPU per event of each, and its ratio to the first."""
    rows = []
    for vendor in vendors:
        for n in sizes:
            days = int(os.environ.get("BENCH_DAYS", "30"))
            sim = Sim([vendor], n, days)
            start = (datetime.now(timezone.utc) - timedelta(days=days, hours=1)).strftime(
                "%Y-%m-%dT%H:%M:%SZ")
            cpu = {name: [] for name, _, _ in variants}
            try:
                for _ in range(runs):
                    for name, agent, fmt in variants:
                        r = run_once(vendor, sim, start, fsync, agent=agent, fmt=fmt)
                        cpu[name].append(r["cpu"] / r["events"] * 1e6)
            finally:
                sim.close()
            first = statistics.median(cpu[variants[0][0]])
            for name, _, _ in variants:
                med = statistics.median(cpu[name])
                rows.append({"vendor": vendor, "events": n, "variant": name,
                             "cpu_us_per_event": med, "runs": cpu[name]})
                print(f"{vendor:18} {n:>8} {name:>12}  {med:6.2f} us/ev CPU (median)  "
                      f"{med / first:5.2f}x {variants[0][0]}  runs: "
                      + " ".join(f"{c:.2f}" for c in cpu[name]), flush=True)
    return rows


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 16), b""))
    except FileNotFoundError:
        return 0


def idle(seconds):
    """Four sources polling every 60 s against a quiet emulator: CPU share and RSS."""
    sim = Sim(VENDORS, 1000, 1)
    start = (datetime.now(timezone.utc) - timedelta(days=1, hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "c.toml")
        with open(cfg, "w") as f:
            f.write('[agent]\nstate_path = "state.db"\npoll_interval = "60s"\n\n')
            for v in VENDORS:
                f.write(source_toml(v, sim.url, start))
            f.write('[[sinks]]\nname = "file"\nkind = "file"\npath = "out.ndjson"\n')
        p = subprocess.Popen([AGENT, "run", "--config", cfg], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        # The first poll catches up on a day of events; measure from when it has finished (the
        # output stops growing) and the sources have gone to sleep, so that the catch-up's CPU
        # and its peak memory are not counted as idle.
        out, seen, still, deadline = os.path.join(d, "out.ndjson"), -1, 0, time.monotonic() + 60
        while still < 3 and time.monotonic() < deadline:
            time.sleep(1)
            n = count_lines(out)
            still = still + 1 if n == seen and n > 0 else 0
            seen = n
        time.sleep(2)
        c0, t0 = proc_cpu(p.pid), time.monotonic()
        rss = []
        while time.monotonic() - t0 < seconds:
            time.sleep(1)
            rss.append(proc_rss_kb(p.pid))
        c1, t1 = proc_cpu(p.pid), time.monotonic()
        p.terminate()
        p.wait()
    sim.close()
    share = (c1 - c0) / (t1 - t0) * 100
    print(f"idle: 4 sources, poll every 60s, {seconds}s measured after a catch-up of {seen} "
          f"events: {share:.3f}% of a core, RSS {max(rss) / 1024:.1f} MB max")
    return {"cpu_percent": share, "rss_mb": max(rss) / 1024, "caught_up": seen}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vendors", default=",".join(VENDORS))
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-fsync", action="store_true", help="file sink with fsync = false")
    ap.add_argument("--idle", type=int, default=0, help="also measure idle cost for N seconds")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--callgrind", action="store_true",
                    help="also count the agent's instructions per event once, under valgrind "
                         "(about 30x slower; unaffected by other load on the machine)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--bin", help="measure this agent binary instead of the release build (say, "
                                  "a copy of an earlier build, for an A/B run on the same emulator)")
    ap.add_argument("--sim-bin", help="run the emulator from this binary (default: the release build)")
    ap.add_argument("--ab", help="NAME=BINARY[:FORMAT],...: an A/B of these variants (see above)")
    a = ap.parse_args()
    global AGENT, BIN
    if a.sim_bin:
        BIN = os.path.abspath(a.sim_bin)
    if a.bin:
        AGENT = os.path.abspath(a.bin)
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    print(f"machine: {os.cpu_count()} cores, {os.uname().release}; fsync={'off' if a.no_fsync else 'on'}; "
          f"median of {a.runs} run(s)", flush=True)
    vendors, sizes = a.vendors.split(","), [int(s) for s in a.sizes.split(",")]
    if a.ab:
        variants = []
        for v in a.ab.split(","):
            name, spec = v.split("=", 1)
            path, _, fmt = spec.partition(":")
            variants.append((name, os.path.abspath(path), fmt or None))
        rows = ab(variants, vendors, sizes, a.runs, not a.no_fsync)
    else:
        rows = bench(vendors, sizes, a.runs, not a.no_fsync, a.callgrind)
    out = {"rows": rows}
    if a.idle:
        out["idle"] = idle(a.idle)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
