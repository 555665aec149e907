#!/usr/bin/env python3
"""gridd hub: throughput of `true` jobs through a hub with 2 local workers,
against local gridmap -j2, xargs -P2 and CCTools Work Queue; the round trip
of one job; and a hub holding 2,000 idle worker connections.

    python3 bench/bench_hub.py [--quick] [--jobs N] [--runs N] [--idle N]
"""

import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import benchlib

sys.path.insert(0, benchlib.REPO)
from gridtools.hub import client as hubclient  # noqa: E402
from gridtools.proto import wire

PY = [sys.executable, "-I", "-S"]
GRIDD = [*PY, os.path.join(benchlib.BIN, "gridd")]
GRIDMAP = [*PY, os.path.join(benchlib.BIN, "gridmap")]
SYSTEM_PY = "/usr/bin/python3"

WQ_MANAGER = r"""
import sys, time
import work_queue as wq
n = int(sys.argv[1])
q = wq.WorkQueue(port=0)
print(q.port, flush=True)
sys.stdin.readline()          # the workers are started: go
deadline = time.time() + 30
while q.stats.workers_connected < 2 and time.time() < deadline:
    q.wait(1)                 # accept the workers before the clock starts
    time.sleep(0.01)
t0 = time.perf_counter()
for i in range(n):
    q.submit(wq.Task("true"))
done = 0
while done < n:
    t = q.wait(5)
    if t:
        if t.return_status != 0:
            sys.exit("task failed: %r" % t.return_status)
        done += 1
print("%.6f" % (time.perf_counter() - t0), flush=True)
"""


class Hub:
    """A hub and its workers for the duration of a measurement."""

    def __init__(self, workers=2, slots=1):
        self.tmp = tempfile.mkdtemp(prefix="bench-hub-")
        self.log = open(os.path.join(self.tmp, "hub.log"), "wb")
        self.procs = []
        hub = subprocess.Popen([*GRIDD, "hub", "--listen", "127.0.0.1:0", "--state",
                                os.path.join(self.tmp, "state")], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=self.log)
        self.procs.append(hub)
        self.pid = hub.pid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = re.search(r"listening on (\S+)", open(self.log.name).read())
            if m:
                self.addr = m.group(1)
                break
            time.sleep(0.02)
        else:
            raise RuntimeError("hub did not start: " + open(self.log.name).read())
        for i in range(workers):
            self.procs.append(subprocess.Popen(
                [*GRIDD, "worker", "--connect", self.addr, "--slots", str(slots),
                 "--name", f"w{i}"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL))
        self.wait_slots(workers * slots)

    def wait_slots(self, n):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                c = hubclient.Client(self.addr, {})
                try:
                    import json
                    st = json.loads(c.request("STATUS").body)
                finally:
                    c.close()
                if st["slots"] >= n:
                    return
            except Exception:
                pass
            time.sleep(0.05)
        raise RuntimeError("workers did not join")

    def close(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.kill()
            p.wait()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def seq_input(n):
    return b"".join(b"%d\n" % i for i in range(1, n + 1))


def time_cmd(argv, data):
    t, out = benchlib.run_timed(argv, stdin=data, timeout=600)
    return t


def throughput(opts):
    n = opts.jobs
    data = seq_input(n)
    results = {}
    runs = opts.runs
    results["xargs -P2"] = benchlib.median(
        [time_cmd(["xargs", "-P2", "-n1", "true"], data) for _ in range(runs)])
    results["gridmap -j2 (local)"] = benchlib.median(
        [time_cmd([*GRIDMAP, "-j2", "true"], data) for _ in range(runs)])
    hub = Hub()
    try:
        walls, cpus = [], []
        for _ in range(runs):
            c0 = cpu_ticks(hub.pid)
            walls.append(time_cmd([*GRIDMAP, "--hub", hub.addr, "true"], data))
            cpus.append((cpu_ticks(hub.pid) - c0) / os.sysconf("SC_CLK_TCK") / n * 1e6)
        results["gridmap --hub (2 workers)"] = benchlib.median(walls)
        results["hub cpu"] = benchlib.median(cpus)
        results["round trip"] = latency(hub.addr, 100 if opts.quick else 500)
    finally:
        hub.close()
    results["Work Queue"] = work_queue(n, runs)
    return results


def work_queue(n, runs):
    if not benchlib.ensure_apt("coop-computing-tools", "work_queue_worker",
                               what="CCTools Work Queue"):
        return None
    def imports():
        return subprocess.run([SYSTEM_PY, "-c", "import work_queue"],
                              capture_output=True).returncode == 0
    if not benchlib.ensure_apt("python3-workqueue", "work_queue_worker",
                               what="Work Queue's Python module", present=imports):
        return None
    times = []
    for _ in range(runs):
        tmp = tempfile.mkdtemp(prefix="bench-wq-")
        mgr = subprocess.Popen([SYSTEM_PY, "-c", WQ_MANAGER, str(n)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=tmp)
        workers = []
        try:
            port = int(mgr.stdout.readline())
            for i in range(2):
                os.makedirs(os.path.join(tmp, f"w{i}"))
                workers.append(subprocess.Popen(
                    ["work_queue_worker", "--cores", "1", "-s", os.path.join(tmp, f"w{i}"),
                     "localhost", str(port)], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, cwd=tmp))
            mgr.stdin.write(b"go\n")
            mgr.stdin.flush()
            line = mgr.stdout.readline()
            if not line:
                print("skipped: Work Queue: the manager failed", flush=True)
                return None
            times.append(float(line))
        finally:
            for p in workers + [mgr]:
                if p.poll() is None:
                    p.kill()
                p.wait()
            shutil.rmtree(tmp, ignore_errors=True)
    return benchlib.median(times)


def latency(addr, n):
    """p50 and p90 of RUN -> DONE for one `true` job, on a held connection."""
    c = hubclient.Client(addr, {})
    body, kv = hubclient.job_request("true", ["true"])
    ts = []
    try:
        for i in range(n + 20):
            t0 = time.perf_counter()
            c.send(wire.format("RUN", str(i), body=body, **kv))
            msg = c.recv(30)
            if msg.verb != "DONE":
                raise RuntimeError(f"expected DONE, got {msg.verb}")
            if i >= 20:                 # warm-up first
                ts.append(time.perf_counter() - t0)
    finally:
        c.close()
    ts.sort()
    return ts[len(ts) // 2], ts[len(ts) * 9 // 10]


def idle_workers(n):
    """A hub with n idle worker connections: its RSS (MB) and CPU (%) idle."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < n + 100:
        print(f"skipped: idle workers: open-file limit {hard} < {n + 100}", flush=True)
        return None
    hub = Hub(workers=0)
    socks = []
    try:
        base = rss_mb(hub.pid)
        for i in range(n):
            host, port = hub.addr.rsplit(":", 1)
            s = socket.create_connection((host, int(port)), timeout=10)
            f = s.makefile("rb")
            f.readline()
            s.sendall(wire.hello("worker", wire.new_nonce()))
            if not f.readline().startswith(b"WELCOME"):
                raise RuntimeError("worker handshake refused")
            s.sendall(wire.format("READY", slots=1, name=f"idle{i}"))
            socks.append((s, f))
        hub.wait_slots(n)
        time.sleep(1.0)
        rss = rss_mb(hub.pid)
        c0, t0 = cpu_ticks(hub.pid), time.monotonic()
        time.sleep(5.0)
        c1, t1 = cpu_ticks(hub.pid), time.monotonic()
        hz = os.sysconf("SC_CLK_TCK")
        cpu = 100.0 * (c1 - c0) / hz / (t1 - t0)
        return rss, base, cpu
    finally:
        for s, f in socks:
            s.close()
        hub.close()


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def main():
    p = benchlib.parser("gridd hub throughput, latency and idle cost vs xargs, "
                        "local gridmap and Work Queue")
    p.add_argument("--jobs", type=int, default=None, help="true jobs per run (default 5000)")
    p.add_argument("--runs", type=int, default=None, help="runs per tool (median; default 3)")
    p.add_argument("--idle", type=int, default=None,
                   help="idle worker connections (default 2000)")
    opts = p.parse_args()
    opts.jobs = opts.jobs or (1000 if opts.quick else 5000)
    opts.runs = opts.runs or (1 if opts.quick else 3)
    opts.idle = opts.idle or (200 if opts.quick else 2000)
    print(f"{benchlib.python_version()}; {os.cpu_count()} cores; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"{opts.jobs} `true` jobs, median of {opts.runs}", flush=True)

    r = throughput(opts)
    n = opts.jobs
    local = r["gridmap -j2 (local)"]
    hubt = r["gridmap --hub (2 workers)"]
    wq = r["Work Queue"]
    rows = []
    for name in ("gridmap --hub (2 workers)", "gridmap -j2 (local)", "xargs -P2", "Work Queue"):
        t = r[name]
        rows.append([name, benchlib.fmt_num(t, 2), benchlib.fmt_num(n / t if t else None, 0),
                     benchlib.fmt_ratio(benchlib.ratio(t, hubt))])
    print(benchlib.table(rows, ["tool", "wall s", "jobs/s", "wall vs hub"]))
    print()
    p50, p90 = r["round trip"]
    idle = idle_workers(opts.idle)
    wq_ratio = benchlib.ratio(n / hubt, n / wq) if wq else None
    local_ratio = benchlib.ratio(hubt, local)
    targets = [
        ["hub jobs/s vs Work Queue", benchlib.fmt_ratio(wq_ratio), ">= 10x",
         benchlib.verdict(wq_ratio, 10)],
        ["hub wall vs local gridmap -j2", benchlib.fmt_ratio(local_ratio), "<= 1.5x",
         benchlib.verdict(local_ratio, 1.5, at_least=False)],
        ["round trip p50 (ms)", benchlib.fmt_num(p50 * 1000, 3), "< 2",
         benchlib.verdict(p50 * 1000, 2, at_least=False)],
        ["round trip p90 (ms)", benchlib.fmt_num(p90 * 1000, 3), "-", "-"],
        ["hub CPU per job, gridmap --hub (us)", benchlib.fmt_num(r["hub cpu"], 1), "<= 60",
         benchlib.verdict(r["hub cpu"], 60, at_least=False)],
    ]
    if idle:
        rss, base, cpu = idle
        targets += [
            [f"hub RSS, {opts.idle} idle workers (MB)", benchlib.fmt_num(rss, 1), "< 100",
             benchlib.verdict(rss, 100, at_least=False)],
            ["hub RSS with none (MB)", benchlib.fmt_num(base, 1), "-", "-"],
            ["hub CPU while idle (%)", benchlib.fmt_num(cpu, 2), "~0 (< 0.5)",
             benchlib.verdict(cpu, 0.5, at_least=False)],
        ]
    print(benchlib.table(targets, ["measure", "value", "target", "verdict"]))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:
        sys.exit(141)
