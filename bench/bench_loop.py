#!/usr/bin/env python3
"""The hub's own CPU per job on its two possible loops: gridtools.io.loop
(what gridd runs) and asyncio's (asyncio.new_event_loop(), given to the same
Hub), measured by bench_hubcore's fake-worker harness, run by run
alternately, with the ratio asyncio / Loop.  DESIGN.md asks for this
measurement before a hand-written loop is kept.

    python3 bench/bench_loop.py [--quick] [--runs N]

The asyncio hub is started from a launcher written into a temporary
directory laid out like a checkout (bin/gridd), so bench_hubcore.measure()
starts and measures it exactly as it does the real one.
"""

import os
import shutil
import statistics
import tempfile

import benchlib
import bench_hubcore

LAUNCHER = """\
# gridd hub on an asyncio loop, for bench/bench_loop.py
import asyncio
import os
import sys

sys.path.insert(0, {repo!r})
from gridtools.cli import common, gridd  # noqa: E402


def hub_on_asyncio(argv):
    loop = asyncio.new_event_loop()
    try:
        return gridd.run_hub(gridd.parse_options(argv), dict(os.environ), loop=loop)
    finally:
        loop.close()


sys.exit(common.run("gridd", hub_on_asyncio, sys.argv[1:]))
"""


def asyncio_tree():
    """A directory whose bin/gridd runs this checkout's hub on asyncio."""
    tree = tempfile.mkdtemp(prefix="bench-loop-")
    os.mkdir(os.path.join(tree, "bin"))
    with open(os.path.join(tree, "bin", "gridd"), "w") as f:
        f.write(LAUNCHER.format(repo=benchlib.REPO))
    return tree


def main():
    p = benchlib.parser("the hub's CPU per job on gridtools.io.loop and on asyncio")
    p.add_argument("--runs", type=int, default=None, help="runs per mode and loop (median; "
                                                          "default 3)")
    opts = p.parse_args()
    runs = opts.runs or (1 if opts.quick else 3)
    trees = {"Loop": benchlib.REPO, "asyncio": asyncio_tree()}
    rows = []
    try:
        for mode in bench_hubcore.MODES:
            got = {name: [] for name in trees}
            for _ in range(runs):
                for name, tree in trees.items():
                    got[name].append(bench_hubcore.measure(tree, mode))
            us = {name: statistics.median(u for u, _ in got[name]) for name in trees}
            rows.append([mode, f"{us['Loop']:.1f}", f"{us['asyncio']:.1f}",
                         benchlib.fmt_ratio(benchlib.ratio(us["asyncio"], us["Loop"]))])
    finally:
        shutil.rmtree(trees["asyncio"], ignore_errors=True)
    print(benchlib.table(rows, ["mode", "Loop us/job", "asyncio us/job", "asyncio/Loop"]))
    return 0


if __name__ == "__main__":
    benchlib.run_main(main)
