#!/usr/bin/env python3
"""Jobs/s of N `true` jobs (gridmap --hub) through the ways a hub meets its
workers, every grid up at once and measured alternately, so that all see
the same machine: a single hub with connect-back workers (the baseline);
one tier (client -> A -> B -> workers, gridd hub --upstream) and two
(A -> B -> C -> workers); a hub that dials listening workers (--peer,
gridd worker --listen); and a hub that dials workers started one per
connection by inetd (openbsd-inetd, else systemd-socket-activate --accept
--inetd; left out, saying why, when neither is installed).  Every grid has
four worker slots: two workers of two.

Prints the median jobs/s of each, its ratio to the baseline, each hub's
CPU per job (from /proc), and for the tiers the target: a tier costs at
most 15 % of throughput (ratio to the grid one tier shallower >= 0.85).
An idle grid sends nothing, so the grids not being measured cost nothing.

    python3 bench/bench_tiers.py [--quick] [--jobs N] [--runs N]
"""

import json
import os
import pwd
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib

PY = [sys.executable, "-I", "-S"]
GRIDD = [*PY, os.path.join(benchlib.BIN, "gridd")]
GRIDMAP = [*PY, os.path.join(benchlib.BIN, "gridmap")]
SLOTS = 2                   # per worker
WORKERS = 2                 # per grid


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Procs:
    """The processes of the whole run, each logging to a file in tmp."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []
        self.n = 0

    def start(self, argv, name, ready=None, timeout=20):
        """Start argv; with ready (a regex), wait until its log matches and
        return the match."""
        self.n += 1
        path = os.path.join(self.tmp, f"{self.n:02d}-{name}.log")
        with open(path, "wb") as log:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=log, cwd=self.tmp, env=clean_env())
        p.logpath = path
        self.procs.append(p)
        if ready is None:
            return p
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(ready, open(path, errors="replace").read())
            if m:
                return p, m
            if p.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench_tiers: {name} did not start:\n"
                                 + open(path, errors="replace").read()[-2000:])
            time.sleep(0.02)

    def hub(self, name, *args):
        p, m = self.start([*GRIDD, "hub", "--listen", "127.0.0.1:0", "--state",
                           os.path.join(self.tmp, f"state-{name}"), *args],
                          f"hub-{name}", r"listening on (\S+)")
        p.addr = m.group(1)
        return p

    def close(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def clean_env():
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("GRID_", "LISTEN_"))}


def slots_of(addr):
    r = subprocess.run([*GRIDD, "ctl", "--hub", addr, "--json", "status"],
                       capture_output=True, timeout=30, env=clean_env())
    return json.loads(r.stdout)["slots"] if r.returncode == 0 else None


def wait_slots(addr, want, timeout=60):
    deadline = time.monotonic() + timeout
    while slots_of(addr) != want:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_tiers: the hub at {addr} never offered {want} slots "
                             f"(has {slots_of(addr)})")
        time.sleep(0.1)


class Grid:
    """One way of meeting workers: the hub clients call (top) and the hubs
    a job passes through, top first."""

    def __init__(self, label, hubs):
        self.label = label
        self.hubs = hubs
        self.top = hubs[0]

    def run(self, jobs):
        """(jobs/s, [CPU seconds per job of each hub]) for jobs `true` jobs."""
        lines = b"".join(b"%d\n" % i for i in range(jobs))
        cpu0 = [cpu_seconds(h.pid) for h in self.hubs]
        t0 = time.perf_counter()
        r = subprocess.run([*GRIDMAP, "--hub", self.top.addr, "true"], input=lines,
                           capture_output=True, timeout=600, env=clean_env())
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"bench_tiers: {self.label}: gridmap exited {r.returncode}: "
                             f"{r.stderr.decode(errors='replace')[-500:]}")
        cpu = [(cpu_seconds(h.pid) - c) / jobs for h, c in zip(self.hubs, cpu0)]
        return jobs / wall, cpu


def connect_workers(procs, hub, name):
    for i in range(WORKERS):
        procs.start([*GRIDD, "worker", "--connect", hub.addr, "--slots", str(SLOTS),
                     "--name", f"{name}{i}"], f"worker-{name}{i}")


def single(procs):
    a = procs.hub("single")
    connect_workers(procs, a, "s")
    wait_slots(a.addr, WORKERS * SLOTS)
    return Grid("single hub, connect-back workers", [a])


def tiers(procs, depth):
    """A chain of depth + 1 hubs, the workers on the last."""
    chain = [procs.hub(f"t{depth}-0")]
    for i in range(1, depth + 1):
        chain.append(procs.hub(f"t{depth}-{i}", "--upstream", chain[-1].addr))
    connect_workers(procs, chain[-1], f"t{depth}-")
    wait_slots(chain[0].addr, WORKERS * SLOTS)
    return Grid(f"{depth} tier{'s' * (depth > 1)} (client -> " +
                " -> ".join("ABC"[:depth + 1]) + " -> workers)", chain)


def dial_out(procs):
    peers = []
    for i in range(WORKERS):
        _, m = procs.start([*GRIDD, "worker", "--listen", "127.0.0.1:0", "--slots", str(SLOTS),
                            "--name", f"l{i}"], f"listener{i}", r"listening on (\S+)")
        peers += ["--peer", m.group(1)]
    hub = procs.hub("dial", *peers)
    wait_slots(hub.addr, WORKERS * SLOTS)
    return Grid("dial-out (--peer, worker --listen)", [hub])


def per_connection(procs):
    """A hub dialling a port where each call starts a gridd worker --stdio:
    openbsd inetd, else systemd-socket-activate; (None, why) without."""
    port = free_port()
    worker = ["worker", "--stdio", "--slots", str(SLOTS)]
    if os.path.exists("/usr/sbin/inetd"):
        # inetd does no quoting and clears PATH: a script naming the interpreter.
        script = os.path.join(procs.tmp, "gridd")
        with open(script, "w") as f:
            f.write(f"#!/bin/sh\nexec {' '.join(GRIDD)} \"$@\"\n")
        os.chmod(script, 0o755)
        conf = os.path.join(procs.tmp, "inetd.conf")
        user = pwd.getpwuid(os.getuid()).pw_name
        with open(conf, "w") as f:
            f.write(f"127.0.0.1:{port} stream tcp nowait.1000 {user} {script} gridd "
                    f"{' '.join(worker)}\n")
        procs.start(["/usr/sbin/inetd", "-i", "-d", "-R", "100000", conf], "inetd", r"ADD:")
        label = "inetd nowait (worker --stdio)"
    elif shutil.which("systemd-socket-activate"):
        procs.start(["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "--accept",
                     "--inetd", *GRIDD, *worker], "activate", r"Listening on")
        label = "systemd-socket-activate --accept (worker --stdio)"
    else:
        return None, "neither /usr/sbin/inetd (openbsd-inetd) nor systemd-socket-activate"
    hub = procs.hub("inetd", *["--peer", f"127.0.0.1:{port}"] * WORKERS)
    wait_slots(hub.addr, WORKERS * SLOTS)
    return Grid(label, [hub]), None


def main():
    p = benchlib.parser("jobs/s through hub tiers, dial-out and inetd workers, paired")
    p.add_argument("--jobs", type=int, default=None, help="jobs per run (default 2000)")
    p.add_argument("--runs", type=int, default=None, help="alternations (default 5)")
    opts = p.parse_args()
    jobs = opts.jobs or (200 if opts.quick else 2000)
    runs = opts.runs or (1 if opts.quick else 5)
    tmp = tempfile.mkdtemp(prefix="bench-tiers-")
    procs = Procs(tmp)
    try:
        grids = [single(procs), tiers(procs, 1), tiers(procs, 2), dial_out(procs)]
        pc, why = per_connection(procs)
        if pc is None:
            print(f"bench_tiers: no per-connection workers: {why}", file=sys.stderr)
        else:
            grids.append(pc)
        for g in grids:
            g.run(20)                           # warm: connections up, code paged in
        results = {g.label: [] for g in grids}
        for r in range(runs):
            # Rotate the order so that none is always first after a pause.
            for g in grids[r % len(grids):] + grids[:r % len(grids)]:
                results[g.label].append(g.run(jobs))
        print(f"{jobs} `true` jobs through gridmap --hub, {WORKERS}x{SLOTS} worker slots, "
              f"median of {runs} alternated run{'s' * (runs > 1)}; {benchlib.python_version()}")
        rate = {k: statistics.median(x for x, _ in v) for k, v in results.items()}
        base = rate[grids[0].label]
        rows = []
        for i, g in enumerate(grids):
            cpu = [statistics.median(c[j] for _, c in results[g.label]) * 1e6
                   for j in range(len(g.hubs))]
            target = verdict = "-"
            if i in (1, 2):                     # each tier against one tier shallower
                shallower = rate[grids[i - 1].label]
                target = f"{rate[g.label] / shallower:.2f} >= 0.85"
                verdict = benchlib.verdict(rate[g.label] / shallower, 0.85)
            rows.append([g.label, f"{rate[g.label]:,.0f}", f"{rate[g.label] / base:.2f}",
                         " + ".join(f"{c:.0f}" for c in cpu), target, verdict])
        print(benchlib.table(rows, ["grid", "jobs/s", "vs single", "hub us/job (top first)",
                                    "tier cost target", ""]))
        print("Throughput on these 2 shared cores varies run to run (about +-15-30 %); "
              "the hubs' CPU per job is the steadier figure.")
    finally:
        procs.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    benchlib.run_main(main)
