#!/usr/bin/env python3
"""Run the benchmarks: every bench/bench_*.py in name order, or the ones named.

    python3 bench/run.py [--quick] [NAME ...]

NAME is `gridmap`, `bench_gridmap` or `bench_gridmap.py`.  Each bench runs
as a child of this same python, with the repository root as its working
directory, its output streamed as it comes.  --quick is passed down (fewer
repetitions, smaller inputs: a smoke test).  Exits 0 when every bench
exited 0, 1 when any failed, 64 on a usage error.
"""

import argparse
import glob
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def available():
    """{short name: path} of every bench script, in name order."""
    paths = sorted(glob.glob(os.path.join(HERE, "bench_*.py")))
    return {os.path.basename(p)[len("bench_"):-len(".py")]: p for p in paths}


def short_name(name):
    name = os.path.basename(name)
    if name.endswith(".py"):
        name = name[:-3]
    if name.startswith("bench_"):
        name = name[len("bench_"):]
    return name


def parse_options(argv):
    p = argparse.ArgumentParser(prog="bench/run.py",
                                description="Run the gridtools benchmarks.")
    p.add_argument("--quick", action="store_true",
                   help="fewer repetitions and smaller inputs (smoke test)")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="benchmarks to run (default: all)")
    p.error = lambda m: (p.print_usage(sys.stderr),
                         p.exit(64, f"{p.prog}: error: {m}\n"))
    return p.parse_args(argv)


def main(argv=None):
    opts = parse_options(sys.argv[1:] if argv is None else argv)
    benches = available()
    if opts.names:
        wanted = [short_name(n) for n in opts.names]
        unknown = [n for n in wanted if n not in benches]
        if unknown:
            print(f"bench/run.py: error: no such benchmark: {', '.join(unknown)}"
                  f" (have: {', '.join(benches) or 'none'})", file=sys.stderr)
            return 64
        benches = {n: benches[n] for n in dict.fromkeys(wanted)}
    if not benches:
        print("bench/run.py: no bench/bench_*.py found", file=sys.stderr)
        return 1

    results = []
    for name, path in benches.items():
        argv = [sys.executable, path] + (["--quick"] if opts.quick else [])
        print(f"==> {name}: {' '.join(argv[1:])}", flush=True)
        t0 = time.monotonic()
        try:
            rc = subprocess.call(argv, cwd=REPO)
        except KeyboardInterrupt:
            print(f"==> {name}: interrupted", flush=True)
            return 130
        results.append((name, rc, time.monotonic() - t0))
        print(f"==> {name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'}"
              f" in {results[-1][2]:.1f} s\n", flush=True)

    failed = [n for n, rc, _ in results if rc != 0]
    print(f"bench: {len(results) - len(failed)} of {len(results)} ok"
          + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:     # `| head`: stop quietly, as a SIGPIPE would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141
    sys.exit(code)
