#!/usr/bin/env python3
"""gridcat's streams against nats-server and redis-server, paired in one
run: fan-out of 100-byte messages from 1 publisher to 4 subscribers, the
latency of one message, a queue emptied by 4 takers with one killed, and
100,000 lines from stdin to a topic and out to stdout with each one's own
command-line tools (mosquitto's too).  The servers are Debian's, installed
here when missing; one load generator (bench/loadgen.py) speaks each
protocol.  Also: the hub's RSS while a subscriber never reads.

    python3 bench/bench_gridcat.py [--quick] [--rounds N]
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import benchlib

PY = [sys.executable, "-I", "-S"]
GRIDD = [*PY, os.path.join(benchlib.BIN, "gridd")]
GRIDCAT = [*PY, os.path.join(benchlib.BIN, "gridcat")]
LOADGEN = [sys.executable, os.path.join(benchlib.REPO, "bench", "loadgen.py")]
SUBS = 4
TAKERS = 4
IDLE = 2.0              # a taker leaves after this long without a message


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, what, seconds=15):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited {proc.returncode} at start")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"{what} did not listen on port {port}")


class Server:
    """One server process on a loopback port, in its own directory."""

    def __init__(self, name, argv_for):
        self.name = name
        self.dir = tempfile.mkdtemp(prefix=f"bench-{name}-")
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.log = open(os.path.join(self.dir, "log"), "wb")
        self.proc = subprocess.Popen(argv_for(self.port, self.dir), stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log, cwd=self.dir)
        wait_port(self.port, self.proc, name)
        self.env = dict(os.environ, GRID_HUB=self.addr)

    def rss_kib(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def close(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_servers():
    servers = {"grid": Server("gridd", lambda port, d: [
        *GRIDD, "hub", "--listen", f"127.0.0.1:{port}", "--state", os.path.join(d, "state")])}
    if benchlib.ensure_apt("nats-server", "nats-server"):
        servers["nats"] = Server("nats-server", lambda port, d: [
            "nats-server", "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", d])
    if benchlib.ensure_apt("redis-server", "redis-server"):
        servers["redis"] = Server("redis-server", lambda port, d: [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", d])
    if benchlib.ensure_apt("mosquitto", "mosquitto") and \
            benchlib.ensure_apt("mosquitto-clients", "mosquitto_pub"):
        servers["mosquitto"] = Server("mosquitto", lambda port, d: [
            "mosquitto", "-p", str(port)])
    servers["grid1"] = servers["grid"]
    return servers


def loadgen(system, server, *args, **kw):
    return subprocess.Popen([*LOADGEN, system, server.addr, *map(str, args)],
                            stdout=subprocess.PIPE, env=server.env, **kw)


def ready(proc):
    line = proc.stdout.readline()
    if line.strip() != b"ready":
        raise SystemExit(f"loadgen: expected ready, got {line!r}")


_seq = 0


def fresh(prefix):
    global _seq
    _seq += 1
    return f"{prefix}{_seq}"


def fanout(system, server, n, size=100):
    """(msg/s, all delivered in order) for n messages to SUBS subscribers."""
    topic = fresh("fan")
    subs = [loadgen(system, server, "sub", topic, n, size) for _ in range(SUBS)]
    for s in subs:
        ready(s)
    pub = loadgen(system, server, "pub", topic, n, size)
    t0 = float(pub.stdout.readline())
    pub.wait()
    ends = []
    ok = True
    for s in subs:
        first, last, got, good = s.communicate()[0].split()
        ok = ok and good == b"1"
        if last != b"None":
            ends.append(float(last))
    return n / (max(ends) - t0) if ends and ok else None, ok


def latency(system, server, n):
    """(p50, p99) in µs of one message from publisher to subscriber."""
    out = loadgen(system, server, "lat", fresh("lat"), n, 100).communicate()[0]
    xs = [float(x) for x in out.split()]
    return xs[len(xs) // 2], xs[len(xs) * 99 // 100]


def queue(system, server, n, size=100):
    """(take+ack/s, lost, doubled): n messages, TAKERS takers, the first
    killed 0.1 s after they start."""
    q = fresh("q")
    subprocess.run([*LOADGEN, system, server.addr, "fill", q, str(n), str(size)],
                   env=server.env, check=True)
    d = tempfile.mkdtemp(prefix="bench-takers-")
    files = [os.path.join(d, f"{i}") for i in range(TAKERS)]
    takers = [loadgen(system, server, "take", q, IDLE, f, stdin=subprocess.PIPE) for f in files]
    for t in takers:
        ready(t)
    t0 = time.monotonic()
    for t in takers:
        t.stdin.write(b"go\n")
        t.stdin.flush()
    time.sleep(0.1)
    takers[0].send_signal(signal.SIGKILL)
    ends = []
    for t in takers[1:]:
        last = t.communicate()[0].split()[0]
        if last != b"None":
            ends.append(float(last))
    takers[0].wait()
    got = []
    for f in files:
        with open(f, "rb") as fh:
            got += fh.read().splitlines()
    shutil.rmtree(d, ignore_errors=True)
    distinct = set(got)
    want = {b"%0*d" % (size, i) for i in range(n)}
    return n / (max(ends) - t0), len(want - distinct), len(got) - len(distinct)


def cli_pipe(system, server, n):
    """(seconds, lost): n lines from stdin to a topic and out to stdout
    with the system's own command-line tools."""
    data = b"".join(b"%07d\n" % i for i in range(n))
    port = str(server.port)
    topic = fresh("cli")
    if system == "grid":
        sub = subprocess.Popen([*GRIDCAT, "sub", topic, "-n", str(n), "--timeout", "20"],
                               stdout=subprocess.PIPE, env=server.env)
        wait_subscribers(server, topic)
        pub = [*GRIDCAT, "pub", topic]
    elif system == "mosquitto":
        sub = subprocess.Popen(["mosquitto_sub", "-p", port, "-t", topic, "-C", str(n),
                                "-W", "20"], stdout=subprocess.PIPE)
        time.sleep(0.3)         # no way to ask mosquitto whether it subscribed
        pub = ["mosquitto_pub", "-p", port, "-t", topic, "-l"]
    elif system == "redis":
        sub = subprocess.Popen(["redis-cli", "-p", port, "--raw", "SUBSCRIBE", topic],
                               stdout=subprocess.PIPE)
        sub.stdout.readline(), sub.stdout.readline(), sub.stdout.readline()
        data = b"".join(b"PUBLISH %s %07d\n" % (topic.encode(), i) for i in range(n))
        pub = ["redis-cli", "-p", port]
    t0 = time.perf_counter()
    subprocess.run(pub, input=data, stdout=subprocess.DEVNULL, env=server.env, check=True)
    if system == "redis":
        lines = 0
        sub.stdout.flush()
        deadline = time.monotonic() + 20
        while lines < 3 * n and time.monotonic() < deadline:
            if not sub.stdout.readline():
                break
            lines += 1
        dt = time.perf_counter() - t0
        sub.kill()
        sub.wait()
        return dt, n - lines // 3
    out = sub.communicate()[0]
    dt = time.perf_counter() - t0
    return dt, n - len(out.splitlines())


def wait_subscribers(server, topic, want=1):
    sys.path.insert(0, benchlib.REPO)
    from gridtools.hub import client as hubclient
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        c = hubclient.Client(server.addr, server.env)
        try:
            ts = [t for t in hubclient.streams(c)["topics"] if t["name"] == topic]
        finally:
            c.close()
        if ts and ts[0]["subscribers"] >= want:
            return
        time.sleep(0.02)
    raise SystemExit(f"the subscriber of {topic} did not come")


def stalled_rss(server, n, size=100, times=3):
    """The hub's RSS in KiB before and after each of `times` rounds of n
    messages published while a subscriber never reads, and the seconds
    of each round: flat once the topic's retention is full (the stalled
    subscriber holds at most its buffer, then reads from the log)."""
    sys.path.insert(0, benchlib.REPO)
    from gridtools.hub import client as hubclient
    topic = fresh("stall")
    c = hubclient.Client(server.addr, server.env)
    c.chan.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.send(b"SUB %s from=end\n" % topic.encode())
    wait_subscribers(server, topic)
    rss = [server.rss_kib()]
    secs = []
    for _ in range(times):
        pub = loadgen("grid", server, "pub", topic, n, size)
        t0 = float(pub.stdout.readline())
        pub.wait()
        secs.append(time.monotonic() - t0)
        rss.append(server.rss_kib())
    c.chan.close()
    return rss, secs, n * size


def main():
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=None, help="paired rounds (default 3, 1 quick)")
    opts = p.parse_args()
    rounds = opts.rounds or (1 if opts.quick else 3)
    fan_n = 20000 if opts.quick else 200000
    lat_n = 300 if opts.quick else 2000
    q_n = 5000 if opts.quick else 40000
    cli_n = 20000 if opts.quick else 100000
    servers = start_servers()
    fan = {s: [] for s in ("grid", "grid1", "nats", "redis") if s in servers}
    lat = {s: [] for s in ("grid", "nats", "redis") if s in servers}
    que = {s: [] for s in ("grid", "nats", "redis") if s in servers}
    cli = {s: [] for s in ("grid", "mosquitto", "redis") if s in servers}
    try:
        for _ in range(rounds):         # each round runs every system once: paired
            for s in fan:
                fan[s].append(fanout(s, servers[s], fan_n if s != "grid1" else fan_n // 4))
            for s in lat:
                lat[s].append(latency(s, servers[s], lat_n))
            for s in que:
                que[s].append(queue(s, servers[s], q_n))
            for s in cli:
                cli[s].append(cli_pipe(s, servers[s], cli_n))
        rss = stalled_rss(servers["grid"], fan_n)
    finally:
        for s in {id(v): v for v in servers.values()}.values():
            s.close()

    def med(xs, i=0):
        vals = [x[i] for x in xs if x[i] is not None]
        return benchlib.median(vals) if vals else None

    names = {"grid": "gridtools hub (gridcat's batches)", "grid1": "gridtools hub, 1 msg a PUB",
             "nats": "nats-server", "redis": "redis-server", "mosquitto": "mosquitto"}
    rows = []
    redis_fan = med(fan["redis"]) if "redis" in fan else None
    for s, xs in fan.items():
        rate = med(xs)
        rows.append(("fan-out 1->4, 100 B", names[s], benchlib.fmt_num(rate, 0), "msg/s",
                     "in order" if all(x[1] for x in xs) else "LOST/REORDERED",
                     benchlib.fmt_ratio(benchlib.ratio(rate, redis_fan))))
    for s, xs in lat.items():
        rows.append(("latency p50 / p99", names[s],
                     f"{med(xs, 0):.0f} / {med(xs, 1):.0f}", "µs", "", ""))
    redis_q = med(que["redis"]) if "redis" in que else None
    for s, xs in que.items():
        rows.append(("queue, 4 takers, 1 killed", names[s], benchlib.fmt_num(med(xs), 0),
                     "take+ack/s", f"{sum(x[1] for x in xs)} lost, "
                     f"{sum(x[2] for x in xs)} doubled",
                     benchlib.fmt_ratio(benchlib.ratio(med(xs), redis_q))))
    for s, xs in cli.items():
        rows.append((f"{cli_n} lines stdin->topic->stdout", names[s],
                     benchlib.fmt_num(med(xs), 2), "s", f"{sum(x[1] for x in xs)} lost", ""))
    sizes, secs, sent = rss
    rows.append((f"hub RSS, 1 subscriber never reads, {len(secs)} x {sent >> 20} MiB",
                 names["grid"], " -> ".join(str(k // 1024) for k in sizes), "MiB",
                 "publisher: " + ", ".join(f"{x:.2f}" for x in secs) + " s", ""))
    print(benchlib.table(rows, ("what", "server", "result", "unit", "delivery", "vs redis")))
    print(f"medians of {rounds} paired round(s); the queue's rate counts from the start to the "
          f"last message taken; a taker leaves after {IDLE:g} s without one")
    print("targets (issue 10): fan-out >= 0.5x redis-server; latency p50 <= 200 µs; "
          "100k lines <= 1 s, none lost; queue >= 20,000 take+ack/s, 0 lost, 0 doubled; "
          "hub RSS flat")
    return 0


if __name__ == "__main__":
    benchlib.run_main(main)
