#!/usr/bin/env python3
"""What watching the hub costs it: the fake-worker hub benchmark
(bench_hubcore) run alternately on a plain hub and on a hub with --http
that is scraped every 100 ms (/metrics) while a status page is open (its
/events follower and its three JSON reads every 2 s), from a process of
their own.  Prints the
hub's CPU per job and jobs/s both ways, and the cost in throughput; the
target is at most 2 %."""

import re
import statistics
import subprocess
import sys
import time

import benchlib
import bench_hubcore


WATCHER = r"""
import sys, threading, time, urllib.request
base = sys.argv[1]
done = threading.Event()

def scrape():
    while not done.wait(0.1):
        with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
            r.read()

def page():
    # What the status page does: follow /events as it does, and read its
    # three JSON documents every 2 s.
    with urllib.request.urlopen(base + "/events?kinds=worker,client", timeout=30) as ev:
        nxt = 0.0
        while not done.is_set():
            if time.monotonic() >= nxt:
                nxt = time.monotonic() + 2
                for path in ("/status.json", "/workers.json", "/streams.json"):
                    with urllib.request.urlopen(base + path, timeout=10) as r:
                        r.read()
            done.wait(0.1)

for f in (scrape, page):
    threading.Thread(target=f, daemon=True).start()
sys.stdin.read()            # until the benchmark closes our stdin
done.set()
"""


def watcher(hub):
    """Scrape /metrics every 100 ms and keep a status page's reads going,
    from a process of its own (so it takes no CPU from the fake workers'
    process), until the returned stop() is called."""
    deadline = time.monotonic() + 15
    while True:
        m = re.search(r"http on (\S+)", open(hub.log).read())
        if m or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if not m:
        raise SystemExit("the hub did not say where its http listens")
    p = subprocess.Popen([sys.executable, "-c", WATCHER, f"http://{m.group(1)}"],
                         stdin=subprocess.PIPE)
    time.sleep(0.3)

    def stop():
        p.stdin.close()
        p.wait(10)
    return stop


def main():
    p = benchlib.parser("what scraping /metrics and an open status page cost the hub")
    p.add_argument("--runs", type=int, default=None, help="runs per mode and way (median; "
                                                          "default 3)")
    opts = p.parse_args()
    runs = opts.runs or (1 if opts.quick else 3)
    rows = []
    for mode in bench_hubcore.MODES:
        plain, watched = [], []
        for _ in range(runs):
            plain.append(bench_hubcore.measure(benchlib.REPO, mode))
            watched.append(bench_hubcore.measure(benchlib.REPO, mode,
                                                 ("--http", "127.0.0.1:0"), watcher))
        us0, us1 = (statistics.median(u for u, _ in x) for x in (plain, watched))
        r0, r1 = (statistics.median(r for _, r in x) for x in (plain, watched))
        cost = 100 * (1 - r1 / r0)
        rows.append([mode, f"{us0:.1f}", f"{us1:.1f}", f"{r0:,.0f}", f"{r1:,.0f}",
                     f"{cost:+.1f}%", "PASS" if cost <= 2 else "MISS"])
    print(benchlib.table(rows, ["mode", "plain us/job", "watched us/job", "plain jobs/s",
                                "watched jobs/s", "throughput lost", "<= 2%"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
