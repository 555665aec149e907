#!/usr/bin/env python3
"""gridcat through a hub: lines from stdin to a topic and out to a
subscriber's stdout, fan-out of 100-byte messages to 4 subscribers, and a
queue emptied by 4 takers with acknowledgements (one of them killed, every
message counted).  Printed against the issue's targets; the peers
(nats-server, redis) are not run by this script yet.

    python3 bench/bench_gridcat.py [--quick]
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import benchlib

PY = [sys.executable, "-I", "-S"]
GRIDD = [*PY, os.path.join(benchlib.BIN, "gridd")]
GRIDCAT = [*PY, os.path.join(benchlib.BIN, "gridcat")]


class Hub:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="bench-gridcat-")
        log = open(os.path.join(self.dir, "hub.log"), "wb")
        self.proc = subprocess.Popen([*GRIDD, "hub", "--listen", "127.0.0.1:0", "--state",
                                      os.path.join(self.dir, "state")],
                                     stdin=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            text = open(log.name).read()
            if "listening on " in text:
                self.addr = text.split("listening on ", 1)[1].split()[0]
                break
            time.sleep(0.02)
        else:
            raise SystemExit("hub did not start: " + open(log.name).read())
        self.env = dict(os.environ, GRID_HUB=self.addr)

    def cat(self, *args, **kw):
        return subprocess.Popen([*GRIDCAT, *args], env=self.env, **kw)

    def close(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_subscribed(hub, topic, n):
    sys.path.insert(0, benchlib.REPO)
    from gridtools.hub import client as hubclient
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        c = hubclient.Client(hub.addr, hub.env)
        try:
            ts = [t for t in hubclient.streams(c)["topics"] if t["name"] == topic]
        finally:
            c.close()
        if ts and ts[0]["subscribers"] == n:
            return
        time.sleep(0.02)
    raise SystemExit(f"subscribers of {topic} did not come")


def pipe_through(hub, lines, subs, size):
    """Seconds from the first line published to the last subscriber's end."""
    topic = f"t{subs}x{lines}"
    readers = [hub.cat("sub", topic, "-n", str(lines), stdout=subprocess.PIPE)
               for _ in range(subs)]
    wait_subscribed(hub, topic, subs)
    data = b"".join(b"%0*d\n" % (size - 1, i) for i in range(lines))
    t0 = time.perf_counter()
    pub = hub.cat("pub", topic, stdin=subprocess.PIPE)
    pub.communicate(data)
    outs = [r.communicate()[0] for r in readers]
    dt = time.perf_counter() - t0
    lost = sum(1 for o in outs if o != data)
    return dt, lost


def queue_take(hub, n, takers):
    """Seconds for takers to empty a queue of n messages, one killed early;
    (seconds, lost, doubled)."""
    q = f"q{n}"
    data = b"".join(b"%d\n" % i for i in range(n))
    hub.cat("put", q, stdin=subprocess.PIPE).communicate(data)
    files = [tempfile.TemporaryFile() for _ in range(takers)]
    t0 = time.perf_counter()
    procs = [hub.cat("take", q, "--window", "64", "--timeout", "1", stdout=f) for f in files]
    time.sleep(0.05)
    procs[0].send_signal(signal.SIGKILL)
    for p in procs:
        p.wait()
    dt = time.perf_counter() - t0 - 1.0      # the survivors' --timeout at the end
    got = []
    for f in files:
        f.seek(0)
        got += f.read().splitlines()
    want = set(data.splitlines())
    return dt, len(want - set(got)), len(got) - len(set(got))


def main():
    opts = benchlib.parser(__doc__.splitlines()[0]).parse_args()
    lines = 20000 if opts.quick else 100000
    fan = 20000 if opts.quick else 200000
    qn = 5000 if opts.quick else 40000
    hub = Hub()
    try:
        dt, lost = pipe_through(hub, lines, 1, 8)
        rows = [("stdin -> topic -> stdout", f"{lines} lines", benchlib.fmt_num(dt), "s",
                 lost, benchlib.verdict(dt, 1.0 * lines / 100000, at_least=False))]
        dt, lost = pipe_through(hub, fan, 4, 100)
        rate = fan / dt
        rows.append(("fan-out 1 -> 4, 100 B", f"{fan} msgs", benchlib.fmt_num(rate, 0),
                     "msg/s", lost, benchlib.verdict(rate, 0.5 * 374000)))
        dt, lost, doubled = queue_take(hub, qn, 4)
        rate = qn / max(dt, 1e-9)
        rows.append(("queue, 4 takers, 1 killed", f"{qn} msgs", benchlib.fmt_num(rate, 0),
                     "take+ack/s", f"{lost} lost, {doubled} doubled",
                     benchlib.verdict(rate, 20000)))
    finally:
        hub.close()
    print(benchlib.table(rows, ("what", "size", "result", "unit", "lost", "target")))
    print("targets (issue 10): 100k lines in 1 s; fan-out at least half of redis-server's "
          "374k msg/s measured here; 20,000 take+ack/s")
    return 0


if __name__ == "__main__":
    benchlib.run_main(main)
