#!/usr/bin/env python3
"""Chaos on loopback: real hubs and workers killed with SIGKILL while work
flows, then a count of what every job left behind.  Run by `make chaos`
(not by `make test`); a few minutes at most; stdlib and this repository only.

Phase 1: a hub, 4 workers of 2 slots, 10,000 session jobs through
`gridmap --hub --retries 4` (four tries in all), one worker killed and
replaced every second.
Phase 2: a hub with a journal and 2 workers, 500 durable jobs through
`gridsub -` in batches, the hub killed twice mid-batch and restarted on the
same state dir and port; every acknowledged id collected with
`gridsub --result`.

Each job appends its number to a side file before printing its token, so a
job that ran twice is seen (legitimate for a try lost with its worker, or
cut short by the hub's death).  A missing or doubled result is not: the
script prints one summary line per phase and exits 1 if there is any.
"""

import argparse
import collections
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = [sys.executable, "-I", "-S"]


def tool(name):
    return [*PY, os.path.join(ROOT, "bin", name)]


def clean_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("GRID_")}


def parse_options(argv):
    p = argparse.ArgumentParser(prog="chaos.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=10000, help="phase 1 session jobs")
    p.add_argument("--durable", type=int, default=500, help="phase 2 durable jobs")
    p.add_argument("--seed", type=int, default=1, help="which workers die, and when")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument("--phase", type=int, choices=(1, 2), help="run only this phase")
    return p.parse_args(argv)


# -- processes ---------------------------------------------------------------

class Grid:
    """The processes of one phase, in one scratch directory; all killed at
    the end."""

    def __init__(self, tmp, name):
        self.tmp = tmp
        self.name = name
        self.procs = []
        self.n = 0
        self.hub = None
        self.addr = None

    def spawn(self, label, argv):
        self.n += 1
        log = os.path.join(self.tmp, f"{self.name}-{label}-{self.n}.log")
        with open(log, "wb") as f:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=f, env=clean_env(), cwd=self.tmp)
        p.log = log
        self.procs.append(p)
        return p

    def start_hub(self, state, port=0):
        p = self.spawn("hub", [*tool("gridd"), "hub", "--listen", f"127.0.0.1:{port}",
                               "--state", state])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = re.search(r"listening on (\S+)", read(p.log))
            if m:
                self.hub, self.addr = p, m.group(1)
                return p
            if p.poll() is not None:
                raise SystemExit(f"chaos: the hub exited {p.returncode}: {read(p.log)}")
            time.sleep(0.05)
        raise SystemExit(f"chaos: the hub did not start: {read(p.log)}")

    @property
    def port(self):
        return int(self.addr.rsplit(":", 1)[1])

    def start_worker(self, name, slots=2):
        return self.spawn(name, [*tool("gridd"), "worker", "--connect", self.addr,
                                 "--slots", str(slots), "--name", name])

    def ctl(self, what):
        r = subprocess.run([*tool("gridd"), "ctl", "--hub", self.addr, "--json", what],
                           capture_output=True, env=clean_env(), timeout=60)
        if r.returncode != 0:
            return None
        return json.loads(r.stdout)

    def wait_for(self, what, cond, timeout):
        """Poll gridd ctl until cond(answer); False if it never came."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = self.ctl(what)
            if data is not None and cond(data):
                return True
            time.sleep(0.2)
        return False

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass


def read(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def kill9(p):
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
    p.wait(15)


def side_counts(path):
    """How many times each job number was appended to a side file."""
    if not os.path.exists(path):
        return collections.Counter()
    with open(path, "rb") as f:
        return collections.Counter(int(x) for x in f.read().split() if x.isdigit())


# -- phase 1: session jobs while workers die ------------------------------------

PHASE1_SECONDS = 300


def phase1(tmp, jobs, rng):
    grid = Grid(tmp, "p1")
    try:
        grid.start_hub(os.path.join(tmp, "p1-state"))
        workers = [grid.start_worker(f"w{i}") for i in range(4)]
        grid.wait_for("workers", lambda ws: len(ws) == 4, 30)
        side = os.path.join(tmp, "p1-side")
        paths = {k: os.path.join(tmp, f"p1-{k}") for k in ("in", "out", "err", "joblog")}
        with open(paths["in"], "w") as f:
            f.write("".join(f"{n}\n" for n in range(1, jobs + 1)))
        gridmap = run_gridmap(grid, paths, side)
        killed, finished = kill_workers_until(grid, workers, gridmap, rng)
        counts = count_phase1(jobs, paths, side)
        counts.update(workers_killed=killed, rc=gridmap.returncode, finished=int(finished))
        return counts
    finally:
        grid.close()


def run_gridmap(grid, paths, side):
    command = f"echo {{}} >> {side}; echo job-{{}}"
    with open(paths["in"], "rb") as i, open(paths["out"], "wb") as o, \
            open(paths["err"], "wb") as e:
        return subprocess.Popen([*tool("gridmap"), "--hub", grid.addr, "--joblog",
                                 paths["joblog"], "--retries", "4", command],
                                stdin=i, stdout=o, stderr=e, env=clean_env(), cwd=grid.tmp)


def kill_workers_until(grid, workers, gridmap, rng):
    """Every second kill -9 one worker and start a fresh one, until gridmap
    ends; (workers killed, whether gridmap finished in time)."""
    killed = 0
    deadline = time.monotonic() + PHASE1_SECONDS
    while gridmap.poll() is None:
        if time.monotonic() > deadline:
            gridmap.kill()
            gridmap.wait()
            return killed, False
        time.sleep(1.0)
        if gridmap.poll() is not None:
            break
        i = rng.randrange(len(workers))
        kill9(workers[i])
        killed += 1
        workers[i] = grid.start_worker(f"w{i}-{killed}")
    return killed, True


def count_phase1(jobs, paths, side):
    printed = collections.Counter()
    garbled = 0
    with open(paths["out"], "rb") as f:
        for line in f.read().splitlines():
            m = re.fullmatch(rb"job-([0-9]+)", line)
            if m:
                printed[int(m.group(1))] += 1
            else:
                garbled += 1
    logged = joblog_exits(paths["joblog"])
    ran = side_counts(side)
    want = range(1, jobs + 1)
    return {
        "jobs": jobs,
        "missing": sum(1 for n in want if not printed[n] and n not in logged),
        "doubled": sum(1 for n in want if printed[n] > 1),
        "ran_twice": sum(1 for n in want if ran[n] > 1),
        "failed": sum(1 for n in want if not printed[n] and n in logged),
        "garbled": garbled,
    }


def joblog_exits(path):
    """seq -> exit value of each job in a joblog."""
    exits = {}
    if not os.path.exists(path):
        return exits
    with open(path) as f:
        next(f, None)
        for line in f:
            cols = line.split("\t")
            if len(cols) >= 7 and cols[0].isdigit():
                exits[int(cols[0])] = cols[6]
    return exits


# -- phase 2: durable jobs while the hub dies ------------------------------------

BATCHES = 10
KILL_IN = (3, 7)                # the batches during which the hub is killed
PHASE2_SECONDS = 240


def phase2(tmp, jobs, rng):
    grid = Grid(tmp, "p2")
    state = os.path.join(tmp, "p2-state")
    side = os.path.join(tmp, "p2-side")
    lines = {n: f"echo {n} >> {side}; echo dur-{n}" for n in range(1, jobs + 1)}
    stats = collections.Counter(jobs=jobs, hub_killed=0, interrupted_submits=0)
    try:
        grid.start_hub(state)
        for i in range(2):
            grid.start_worker(f"d{i}")
        acked = submit_all(grid, state, lines, rng, stats)
        done = grid.wait_for("status", lambda s: s["durable"] == 0, PHASE2_SECONDS)
        stats["finished"] = int(done)
        results = collect(grid, acked)
        stop_hub(grid)
        leftovers = journal_leftovers(state)
        ran = side_counts(side)
        stats["missing"] = sum(1 for n in lines if results.get(n, 0) == 0)
        stats["doubled"] = sum(1 for n in lines if results.get(n, 0) > 1)
        stats["ran_twice"] = sum(1 for n in lines if ran[n] > 1)
        stats["unacknowledged_duplicates"] = sum(leftovers.values())
        return stats
    finally:
        grid.close()


def submit_all(grid, state, lines, rng, stats):
    """Submit every line in batches; the hub dies during some of them.
    n -> acknowledged job id.  A batch whose ids never came is submitted
    again (what the hub journaled of it runs as well: those are the
    unacknowledged duplicates)."""
    acked = {}
    todo = sorted(lines)
    size = -(-len(todo) // BATCHES)
    batches = [todo[i:i + size] for i in range(0, len(todo), size)]
    took = 0.5
    for b, batch in enumerate(batches):
        for attempt in range(5):
            t0 = time.monotonic()
            kill_after = took * rng.uniform(0.6, 1.0) if b in KILL_IN and attempt == 0 else None
            ids = submit_batch(grid, [lines[n] for n in batch], kill_after)
            if kill_after is not None:
                stats["hub_killed"] += 1
                grid.start_hub(state, grid.port)
            if ids is not None:
                took = time.monotonic() - t0 if kill_after is None else took
                acked.update(zip(batch, ids))
                break
            stats["interrupted_submits"] += 1
        else:
            raise SystemExit(f"chaos: batch {b} could not be submitted")
    return acked


def submit_batch(grid, commands, kill_after):
    """gridsub - with these commands; their ids, or None if it failed.
    With kill_after, the hub is killed that many seconds into it."""
    p = subprocess.Popen([*tool("gridsub"), "--hub", grid.addr, "-"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())
    p.stdin.write("".join(c + "\n" for c in commands).encode())
    p.stdin.close()
    if kill_after is not None:
        time.sleep(kill_after)
        kill9(grid.hub)
    out = p.stdout.read()
    p.stderr.read()
    if p.wait(120) != 0:
        return None
    ids = out.decode().split()
    return ids if len(ids) == len(commands) else None


def collect(grid, acked, chunk=50):
    """n -> how many times dur-n came back from its acknowledged job
    (0 for a result that is gone or failed)."""
    results = {}
    items = sorted(acked.items())
    for i in range(0, len(items), chunk):
        part = items[i:i + chunk]
        r = run_gridsub(grid, "--result", *[did for _, did in part])
        want = "".join(f"dur-{n}\n" for n, _ in part)
        if r.returncode == 0 and r.stdout.decode() == want:
            results.update((n, 1) for n, _ in part)
            continue
        for n, did in part:             # find out which one
            one = run_gridsub(grid, "--result", did)
            got = one.stdout.decode().split().count(f"dur-{n}") if one.returncode == 0 else 0
            results[n] = got
            if got != 1:
                print(f"phase2: job {did} (dur-{n}): exit {one.returncode}, "
                      f"stdout {one.stdout[:80]!r}, stderr {one.stderr[:200]!r}",
                      file=sys.stderr)
    return results


def run_gridsub(grid, *args):
    return subprocess.run([*tool("gridsub"), "--hub", grid.addr, *args], capture_output=True,
                          env=clean_env(), timeout=120)


def stop_hub(grid):
    grid.hub.send_signal(signal.SIGTERM)
    try:
        grid.hub.wait(40)
    except subprocess.TimeoutExpired:
        kill9(grid.hub)


def journal_leftovers(state):
    """n -> jobs still in the journal once every acknowledged one was
    collected (and so forgotten): journaled, never acknowledged."""
    db = sqlite3.connect(os.path.join(state, "journal.sqlite"))
    try:
        rows = db.execute("SELECT command FROM jobs").fetchall()
    finally:
        db.close()
    left = collections.Counter()
    for (command,) in rows:
        m = re.search(rb"dur-([0-9]+)", bytes(command))
        if m:
            left[int(m.group(1))] += 1
    return left


# -- main ----------------------------------------------------------------------

def summary(phase, stats, keys):
    words = " ".join(f"{k}={stats[k]}" for k in keys if k in stats)
    print(f"{phase}: {words}", flush=True)


def broken(stats):
    return stats["missing"] or stats["doubled"] or stats.get("garbled") \
        or not stats["finished"]


def main(argv=None):
    opts = parse_options(sys.argv[1:] if argv is None else argv)
    rng = random.Random(opts.seed)
    tmp = tempfile.mkdtemp(prefix="gridchaos-")
    bad = False
    try:
        if opts.phase in (None, 1):
            s = phase1(tmp, opts.jobs, rng)
            summary("phase1", s, ("jobs", "missing", "doubled", "ran_twice", "workers_killed",
                                  "failed", "garbled", "rc", "finished"))
            bad = bad or broken(s)
        if opts.phase in (None, 2):
            s = phase2(tmp, opts.durable, rng)
            summary("phase2", s, ("jobs", "missing", "doubled", "ran_twice", "hub_killed",
                                  "interrupted_submits", "unacknowledged_duplicates",
                                  "finished"))
            bad = bad or broken(s)
    finally:
        if opts.keep or bad:
            print(f"chaos: logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
