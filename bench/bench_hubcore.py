#!/usr/bin/env python3
"""The hub alone: its own CPU per job and its jobs/s, with fake workers that
answer every RUN at once (no process is spawned) and one client that
pipelines RUNs, so nothing but the hub's work is measured.

    python3 bench/bench_hubcore.py [--quick] [--runs N] [--against DIR]

Two modes:
  batched    8 fake workers x 256 slots, 4,000 jobs in flight, 50,000 jobs
  unbatched  8 fake workers x 1 slot, 8 jobs in flight, 20,000 jobs
The hub's CPU comes from /proc/PID/stat (user + system) over the run.
--against DIR measures the hub of another checkout too, alternating run by
run with this one, and prints both and their ratio (a paired comparison:
on two shared cores single runs vary by a fifth).
"""

import os
import re
import shutil
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib

PY = [sys.executable, "-I", "-S"]
RUN_ID = re.compile(rb"^RUN (\d+)", re.M)
DONE_ID = re.compile(rb"^DONE (\S+)", re.M)
MODES = {"batched": (8, 256, 4000, 50000), "unbatched": (8, 1, 8, 20000)}


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_hub(tree, args=()):
    tmp = tempfile.mkdtemp(prefix="hubcore-")
    log = os.path.join(tmp, "hub.log")
    with open(log, "wb") as f:
        p = subprocess.Popen([*PY, os.path.join(tree, "bin", "gridd"), "hub", "--listen",
                              "127.0.0.1:0", "--state", os.path.join(tmp, "state"), *args],
                             stderr=f, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        m = re.search(r"listening on (\S+):(\d+)", open(log).read())
        if m:
            p.tmp, p.log = tmp, log
            return p, (m.group(1), int(m.group(2)))
        time.sleep(0.02)
    p.kill()
    text = open(log).read()
    shutil.rmtree(tmp, ignore_errors=True)
    raise SystemExit("hub did not start: " + text)


def greet(addr, role, extra=b""):
    """A connected socket past the handshake (a hub without keys)."""
    s = socket.create_connection(addr)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    line(s)                                         # the hub's HELLO
    s.sendall(b"HELLO 1 role=%s nonce=%s\n" % (role, b"ab" * 32) + extra)
    welcome = line(s)
    if not welcome.startswith(b"WELCOME"):
        raise SystemExit(f"hub refused the {role.decode()}: {welcome!r}")
    s.setblocking(False)
    return s


def line(s):
    """One line, read a byte at a time: nothing after it is taken."""
    got = bytearray()
    while not got.endswith(b"\n"):
        b = s.recv(1)
        if not b:
            raise SystemExit(f"the hub closed the connection after {bytes(got)!r}")
        got += b
    return bytes(got)


class FakeWorker:
    """Answers every RUN with DONE at once; bodies are skipped by length."""

    def __init__(self, addr, slots, i):
        self.sock = greet(addr, b"worker", b"READY slots=%d name=fake%d\n" % (slots, i))
        self.buf = bytearray()
        self.out = bytearray()

    def on_read(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise SystemExit("the hub closed a fake worker")
        self.buf += data
        # RUN hid ... bytes=N\n<N bytes>: answer each, skip its body.
        pos = 0
        buf = self.buf
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                break
            head = bytes(buf[pos:nl])
            size = 0
            b = head.rfind(b" bytes=")
            if b >= 0:
                size = int(head[b + 7:])
            end = nl + 1 + size
            if end > len(buf):
                break
            if head.startswith(b"RUN "):
                self.out += b"DONE %s exit=0\n" % head.split(b" ", 2)[1]
            elif head.startswith(b"PING"):
                self.out += b"PONG\n"
            pos = end
        del buf[:pos]
        self.flush()

    def flush(self):
        while self.out:
            try:
                n = self.sock.send(self.out)
            except BlockingIOError:
                return
            del self.out[:n]


def measure(tree, mode, hub_args=(), watch=None):
    """(hub CPU us per job, jobs/s); watch(hub) is called once the hub is
    up and returns a function that stops what it started (bench_http)."""
    workers, slots, inflight, jobs = MODES[mode]
    hub, addr = start_hub(tree, hub_args)
    stop = watch(hub) if watch is not None else None
    try:
        fakes = [FakeWorker(addr, slots, i) for i in range(workers)]
        client = greet(addr, b"client")
        time.sleep(0.3)                             # every READY is in
        sel = selectors.DefaultSelector()
        for w in fakes:
            sel.register(w.sock, selectors.EVENT_READ, w)
        sel.register(client, selectors.EVENT_READ, None)
        cpu0 = cpu_seconds(hub.pid)
        t0 = time.perf_counter()
        sent = done = 0
        out = bytearray()
        cbuf = bytearray()
        while done < jobs:
            while sent < jobs and sent - done < inflight:
                out += b"RUN %d bytes=4\ntrue" % sent
                sent += 1
            while out:
                try:
                    n = client.send(out)
                except BlockingIOError:
                    break
                del out[:n]
            for key, _ in sel.select(5):
                if key.data is None:
                    data = client.recv(1 << 20)
                    if not data:
                        raise SystemExit("the hub closed the client")
                    cbuf += data
                    last = cbuf.rfind(b"\n")
                    if last >= 0:
                        done += len(DONE_ID.findall(cbuf, 0, last + 1))
                        del cbuf[:last + 1]
                else:
                    key.data.on_read()
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(hub.pid) - cpu0
    finally:
        if stop is not None:
            stop()
        hub.terminate()
        hub.wait(10)
        shutil.rmtree(hub.tmp, ignore_errors=True)
    return cpu / jobs * 1e6, jobs / wall


def main():
    p = benchlib.parser("the hub's own CPU per job, with fake workers")
    p.add_argument("--against", metavar="DIR",
                   help="another checkout whose hub is measured alternately with this one")
    p.add_argument("--runs", type=int, default=None, help="runs per mode (median; default 3)")
    opts = p.parse_args()
    runs = opts.runs or (1 if opts.quick else 3)
    trees = [benchlib.REPO] + ([opts.against] if opts.against else [])
    targets = {"batched": 10.0, "unbatched": 25.0}
    rows = []
    for mode in MODES:
        got = {t: [] for t in trees}
        for _ in range(runs):
            for tree in trees:
                got[tree].append(measure(tree, mode))
        us = {t: statistics.median(u for u, _ in got[t]) for t in trees}
        rate = statistics.median(r for _, r in got[benchlib.REPO])
        row = [mode, f"{us[benchlib.REPO]:.1f}", f"{rate:,.0f}", f"<= {targets[mode]:g}",
               "PASS" if us[benchlib.REPO] <= targets[mode] else "MISS"]
        if opts.against:
            row += [f"{us[opts.against]:.1f}", f"{us[benchlib.REPO] / us[opts.against]:.3f}"]
        rows.append(row)
    headers = ["mode", "hub us/job", "jobs/s", "target us/job", "verdict"]
    if opts.against:
        headers += ["other us/job", "this/other"]
    print(benchlib.table(rows, headers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
