#!/usr/bin/env python3
"""This tree against an earlier commit, paired in one run: the figures a
change must not make worse, measured alternately (old, new, old, new...)
so that both see the same machine.

    python3 bench/paired.py REV [--runs N] [--jobs N]

For each tree: 5,000 `true` jobs on gridmap's local pool (-j2); the same
through a hub and 2 one-slot workers (gridmap --hub), with the hub's own CPU
per job read from /proc; and the median round trip of one `true` job through
that hub.  Prints medians, and new/old ratios (below 1 is faster).
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib

PY = [sys.executable, "-I", "-S"]


class Tree:
    def __init__(self, name, root):
        self.name = name
        self.root = root

    def tool(self, name):
        return [*PY, os.path.join(self.root, "bin", name)]


def local_run(tree, jobs):
    t0 = time.perf_counter()
    subprocess.run([*tree.tool("gridmap"), "-j2", "true"], input=b"\n".join(
        b"%d" % i for i in range(jobs)) + b"\n", check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Grid:
    """A hub and two one-slot workers of one tree."""

    def __init__(self, tree):
        self.tmp = tempfile.mkdtemp(prefix="paired-")
        log = os.path.join(self.tmp, "hub.log")
        with open(log, "wb") as f:
            self.hub = subprocess.Popen([*tree.tool("gridd"), "hub", "--listen", "127.0.0.1:0",
                                         "--state", os.path.join(self.tmp, "state")],
                                        stderr=f, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        self.addr = None
        while self.addr is None:
            for line in open(log):
                if "listening on " in line:
                    self.addr = line.split("listening on ")[1].strip()
            if time.monotonic() > deadline:
                raise SystemExit("hub did not start: " + open(log).read())
            time.sleep(0.02)
        self.workers = [subprocess.Popen([*tree.tool("gridd"), "worker", "--connect",
                                          self.addr, "--slots", "1", "--name", f"w{i}"],
                                         stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
                        for i in range(2)]
        self.tree = tree
        deadline = time.monotonic() + 15
        while True:
            r = subprocess.run([*tree.tool("gridd"), "ctl", "--hub", self.addr, "--json",
                                "status"], capture_output=True)
            if r.returncode == 0 and b'"workers": 2' in r.stdout:
                break
            if time.monotonic() > deadline:
                raise SystemExit("workers did not join")
            time.sleep(0.05)

    def run(self, jobs):
        """Wall seconds and hub CPU seconds for jobs `true` jobs."""
        cpu0 = cpu_seconds(self.hub.pid)
        t0 = time.perf_counter()
        subprocess.run([*self.tree.tool("gridmap"), "--hub", self.addr, "true"],
                       input=b"\n".join(b"%d" % i for i in range(jobs)) + b"\n", check=True,
                       stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0, cpu_seconds(self.hub.pid) - cpu0

    def round_trip(self, n=30):
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            subprocess.run([*self.tree.tool("gridmap"), "--hub", self.addr, "true"],
                           input=b"1\n", check=True, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def close(self):
        for p in [*self.workers, self.hub]:
            p.terminate()
        for p in [*self.workers, self.hub]:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def main():
    p = benchlib.parser("this tree against an earlier commit, paired")
    p.add_argument("rev", help="the commit to compare against (e.g. HEAD~5)")
    p.add_argument("--runs", type=int, default=None, help="alternations (default 5)")
    p.add_argument("--jobs", type=int, default=None, help="jobs per run (default 5000)")
    opts = p.parse_args()
    runs = opts.runs or (1 if opts.quick else 5)
    jobs = opts.jobs or (500 if opts.quick else 5000)
    old_root = tempfile.mkdtemp(prefix="paired-old-")
    subprocess.run(["git", "-C", benchlib.REPO, "worktree", "add", "--detach", "-q", old_root,
                    opts.rev], check=True)
    trees = [Tree(f"old ({opts.rev})", old_root), Tree("new (this tree)", benchlib.REPO)]
    results = {t.name: {"local": [], "hub": [], "hubcpu": [], "rtt": []} for t in trees}
    try:
        for _ in range(runs):
            for tree in trees:
                results[tree.name]["local"].append(local_run(tree, jobs))
            for tree in trees:
                g = Grid(tree)
                try:
                    wall, cpu = g.run(jobs)
                    results[tree.name]["hub"].append(wall)
                    results[tree.name]["hubcpu"].append(cpu / jobs * 1e6)
                    results[tree.name]["rtt"].append(g.round_trip())
                finally:
                    g.close()
    finally:
        subprocess.run(["git", "-C", benchlib.REPO, "worktree", "remove", "--force", old_root])
    rows = []
    med = {t.name: {k: statistics.median(v) for k, v in results[t.name].items()} for t in trees}
    old, new = (med[t.name] for t in trees)
    for key, label, unit in (("local", f"{jobs} true, local -j2", "s"),
                             ("hub", f"{jobs} true, hub + 2 workers", "s"),
                             ("hubcpu", "hub CPU per job", "us"),
                             ("rtt", "one job's round trip", "s")):
        rows.append([label, f"{old[key]:.4g} {unit}", f"{new[key]:.4g} {unit}",
                     f"{new[key] / old[key]:.3f}"])
    print(benchlib.table(rows, ["measure", trees[0].name, trees[1].name, "new/old"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
