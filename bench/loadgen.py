#!/usr/bin/env python3
"""One load generator for three message servers: a gridtools hub (its
streams: PUB/SUB/PUT/TAKE/GOT), nats-server (core NATS, and JetStream for
the queue) and redis-server (PUBLISH/SUBSCRIBE, LPUSH/BRPOP).  Standard
library only, the same code path for each, so they are measured the same
way: one process a connection, large writes, frames counted by their
headers.  bench/bench_gridcat.py starts the servers and runs these roles:

    loadgen.py SYSTEM ADDR sub TOPIC N SIZE        print "ready", then one
                                                   line "T_FIRST T_LAST COUNT OK"
    loadgen.py SYSTEM ADDR pub TOPIC N SIZE [BATCH]     print "T_START"
    loadgen.py SYSTEM ADDR lat TOPIC N SIZE        print latencies in µs, sorted
    loadgen.py SYSTEM ADDR fill QUEUE N SIZE       put N messages, numbered
    loadgen.py SYSTEM ADDR take QUEUE IDLE FILE    print "ready", wait for a line
                                                   on stdin, take until IDLE
                                                   seconds pass with nothing; the
                                                   payloads to FILE; "T_LAST COUNT"

SYSTEM is grid, grid1 (a gridtools hub, one message a PUB: no batching),
nats or redis.  Times are time.monotonic(), comparable between processes.
Payloads are the message's number in decimal, zero-padded to SIZE bytes.
"""

import json
import os
import select
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

BATCH = 1000            # messages a write carries
CHUNK = 1 << 20


def payload(i, size):
    return b"%0*d" % (size, i)


def connect(addr):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Reader:
    """Buffered reads: lines and exact byte counts."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def fill(self, timeout=None):
        if timeout is not None:
            r, _, _ = select.select([self.sock], [], [], timeout)
            if not r:
                return False
        data = self.sock.recv(CHUNK)
        if not data:
            raise EOFError("the server closed the connection")
        self.buf += data
        return True

    def line(self, timeout=None):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                out = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return out
            if not self.fill(timeout):
                return None

    def exact(self, n):
        while len(self.buf) < n:
            self.fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


class Answers(threading.Thread):
    """Reads what a publisher's server answers (the hub's OKs, redis's
    counts, NATS's PONG), so neither side blocks on a full pipe, until
    `want` lines came: a publisher that closed with answers unread would
    reset its connection and lose what the server had not read yet."""

    def __init__(self, sock, want):
        super().__init__(daemon=True)
        self.sock = sock
        self.want = want
        self.lines = 0
        self.start()

    def run(self):
        while self.lines < self.want:
            data = self.sock.recv(CHUNK)
            if not data:
                return
            self.lines += data.count(b"\n")


# -- the three protocols --------------------------------------------------------

class Grid:
    """A gridtools hub's streams, as gridcat speaks them (gridtools(7))."""
    batched = True

    def __init__(self, addr):
        from gridtools.hub import client as hubclient
        c = hubclient.Client(addr, os.environ)
        self.sock = c.chan.sock
        self.sock.setblocking(True)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rd = Reader(self.sock)

    def head(self):
        line = self.rd.line()
        words = line.split()
        kv = dict(w.split(b"=", 1) for w in words[1:] if b"=" in w)
        return words[0], kv

    def subscribe(self, topic, size=None):
        self.sock.sendall(b"SUB %s from=end\n" % topic)
        verb, kv = self.head()
        assert verb == b"OK", (verb, kv)

    def answers(self, n, frames):
        return frames if self.batched else n

    def publish(self, topic, msgs):
        if self.batched:
            body = b"".join(b"%d:%s\n" % (len(m), m) for m in msgs)
            return b"PUB %s n=%d bytes=%d\n%s" % (topic, len(msgs), len(body), body)
        return b"".join(b"PUB %s bytes=%d\n%s" % (topic, len(m), m) for m in msgs)

    def answered(self):
        self.head()

    def receive(self):
        """(count, last message) of the next MSG."""
        verb, kv = self.head()
        if verb != b"MSG":
            raise SystemExit(f"grid: expected MSG, got {verb!r} {kv}")
        body = self.rd.exact(int(kv[b"bytes"]))
        n = int(kv.get(b"n", 1))
        if b"n" not in kv:
            return 1, body
        last = body[body.rfind(b":", 0, len(body) - 1) + 1:-1]
        return n, last

    def fill(self, queue, msgs):
        for i in range(0, len(msgs), BATCH):
            part = msgs[i:i + BATCH]
            body = b"".join(b"%d:%s\n" % (len(m), m) for m in part)
            self.sock.sendall(b"PUT %s n=%d bytes=%d\n%s" % (queue, len(part), len(body), body))
            verb, kv = self.head()
            assert verb == b"OK", (verb, kv)

    def take(self, queue, idle, window=64):
        """Yield each message; acknowledged (GOT) once all in hand were
        yielded and nothing more has arrived."""
        self.sock.sendall(b"TAKE %s n=%d\n" % (queue, window))
        verb, kv = self.head()
        assert verb == b"OK", (verb, kv)
        held = []
        while True:
            if held and not self.rd.buf:
                r, _, _ = select.select([self.sock], [], [], 0)
                if not r:
                    body = b" ".join(held)
                    self.sock.sendall(b"GOT %s more=%d bytes=%d\n%s"
                                      % (queue, len(held), len(body), body))
                    held = []
            line = self.rd.line(idle)
            if line is None:
                return
            words = line.split()
            kv = dict(w.split(b"=", 1) for w in words[1:] if b"=" in w)
            body = self.rd.exact(int(kv[b"bytes"]))
            held.append(kv[b"id"])
            yield body


class Grid1(Grid):
    batched = False


class Nats:
    """Core NATS (PUB/SUB/MSG); JetStream's work-queue stream for take."""

    def __init__(self, addr):
        self.sock = connect(addr)
        self.rd = Reader(self.sock)
        info = self.rd.line()
        assert info.startswith(b"INFO"), info
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,'
                          b'"no_responders":true}\r\nPING\r\n')
        self.pong()

    def pong(self):
        while True:
            line = self.rd.line()
            if line.startswith(b"PONG"):
                return
            if line.startswith(b"PING"):
                self.sock.sendall(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                raise SystemExit(f"nats: {line!r}")

    def subscribe(self, topic, size=None):
        self.sock.sendall(b"SUB %s 1\r\nPING\r\n" % topic)
        self.pong()
        self.fixed = b"MSG %s 1 %d\r\n" % (topic, size or 0), 2

    def publish(self, topic, msgs):
        return b"".join(b"PUB %s %d\r\n%s\r\n" % (topic, len(m), m) for m in msgs)

    def answers(self, n, frames):
        return 1                    # the PONG to a PING after the last message

    def last(self):
        return b"PING\r\n"

    def message(self):
        """(subject, reply, headers, body) of the next MSG or HMSG."""
        while True:
            line = self.rd.line()
            words = line.split()
            if words[0] == b"MSG":
                body = self.rd.exact(int(words[-1]) + 2)[:-2]
                return words[1], words[3] if len(words) == 5 else None, b"", body
            if words[0] == b"HMSG":
                hlen, total = int(words[-2]), int(words[-1])
                raw = self.rd.exact(total + 2)[:-2]
                return (words[1], words[3] if len(words) == 6 else None,
                        raw[:hlen], raw[hlen:])
            if words[0] == b"PING":
                self.sock.sendall(b"PONG\r\n")
            elif words[0] == b"-ERR":
                raise SystemExit(f"nats: {line!r}")

    def receive(self):
        return fixed(self) or (1, self.message()[3])

    def answered(self):
        pass

    def request(self, subject, data):
        self.sock.sendall(b"SUB _INBOX.req 9\r\nPUB %s _INBOX.req %d\r\n%s\r\n"
                          % (subject, len(data), data))
        _, _, _, body = self.message()
        self.sock.sendall(b"UNSUB 9\r\n")
        reply = json.loads(body)
        if "error" in reply and reply["error"].get("err_code") != 10058:   # exists already
            raise SystemExit(f"nats: {subject.decode()}: {reply['error']}")
        return reply

    def setup_queue(self, queue):
        q = queue.decode()
        self.request(b"$JS.API.STREAM.CREATE." + queue, json.dumps(
            {"name": q, "subjects": [q], "retention": "workqueue", "storage": "file"}).encode())
        self.request(b"$JS.API.CONSUMER.DURABLE.CREATE.%s.takers" % queue, json.dumps(
            {"stream_name": q, "config": {"durable_name": "takers", "ack_policy": "explicit",
                                          "ack_wait": 1_000_000_000,
                                          "max_ack_pending": 10000}}).encode())

    def fill(self, queue, msgs):
        """Published with JetStream's acknowledgement of each (stored)."""
        self.setup_queue(queue)
        self.sock.sendall(b"SUB _INBOX.acks 2\r\n")
        for i in range(0, len(msgs), BATCH):
            part = msgs[i:i + BATCH]
            self.sock.sendall(b"".join(b"PUB %s _INBOX.acks %d\r\n%s\r\n" % (queue, len(m), m)
                                       for m in part))
            for _ in part:
                _, _, _, body = self.message()
                if b"error" in body:
                    raise SystemExit(f"nats: publish: {body!r}")

    def take(self, queue, idle, window=64):
        """Pull up to window at a time; each message acknowledged (+ACK to
        its reply subject) once it was yielded and nothing more is in."""
        inbox = b"_INBOX.take.%d" % os.getpid()     # each taker its own
        self.sock.sendall(b"SUB %s 3\r\n" % inbox)
        nxt = b"$JS.API.CONSUMER.MSG.NEXT.%s.takers" % queue
        ask = json.dumps({"batch": window, "expires": int(idle * 1e9)}).encode()
        pending = 0
        acks = []
        while True:
            if pending == 0:
                self.sock.sendall(b"PUB %s %s %d\r\n%s\r\n" % (nxt, inbox, len(ask), ask))
                pending = window
                got_any = False
            if acks and not self.rd.buf and not select.select([self.sock], [], [], 0)[0]:
                self.sock.sendall(b"".join(b"PUB %s 0\r\n\r\n" % r for r in acks))
                acks = []
            if not self.rd.buf and not self.rd.fill(idle + 1):
                return
            _, reply, headers, body = self.message()
            if reply is None:           # a status: 408 the request expired, 404 none
                pending = 0
                if not got_any:
                    self.sock.sendall(b"".join(b"PUB %s 0\r\n\r\n" % r for r in acks))
                    return
                continue
            pending -= 1
            got_any = True
            acks.append(reply)
            yield body


def fixed(c):
    """(count, last) of every whole message in c's buffer when all are
    the same frame (c.fixed: its header and the bytes after its payload
    of c.size), counted at C speed; None when something else is in the
    way (a PING, say), for the caller's general parser."""
    head, tail = c.fixed
    rd = c.rd
    frame = len(head) + c.size + tail
    while len(rd.buf) < frame:
        rd.fill()
    k = len(rd.buf) // frame
    if rd.buf.count(head, 0, k * frame) != k or not rd.buf.startswith(head):
        return None
    last = bytes(rd.buf[(k - 1) * frame + len(head):k * frame - tail])
    del rd.buf[:k * frame]
    return k, last


def resp(*words):
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)


class Redis:
    """PUBLISH/SUBSCRIBE; LPUSH/BRPOP for the queue (no acknowledgement:
    what a taker holds when it dies is lost)."""

    def __init__(self, addr):
        self.sock = connect(addr)
        self.rd = Reader(self.sock)

    def value(self):
        line = self.rd.line()
        kind = line[:1]
        if kind == b"*":
            n = int(line[1:])
            return None if n < 0 else [self.value() for _ in range(n)]
        if kind == b"$":
            n = int(line[1:])
            return None if n < 0 else self.rd.exact(n + 2)[:-2]
        if kind == b":":
            return int(line[1:])
        if kind == b"-":
            raise SystemExit(f"redis: {line!r}")
        return line[1:].strip()

    def subscribe(self, topic, size=None):
        self.sock.sendall(resp(b"SUBSCRIBE", topic))
        self.value()
        self.fixed = b"*3\r\n$7\r\nmessage\r\n$%d\r\n%s\r\n$%d\r\n" % (
            len(topic), topic, size or 0), 2

    def publish(self, topic, msgs):
        return b"".join(resp(b"PUBLISH", topic, m) for m in msgs)

    def answers(self, n, frames):
        return n

    def receive(self):
        return fixed(self) or (1, self.value()[2])

    def answered(self):
        self.value()

    def fill(self, queue, msgs):
        for i in range(0, len(msgs), BATCH):
            part = msgs[i:i + BATCH]
            self.sock.sendall(resp(b"LPUSH", queue, *part))
            self.value()

    def take(self, queue, idle, window=None):
        t = str(max(1, int(idle))).encode()
        while True:
            self.sock.sendall(resp(b"BRPOP", queue, t))
            v = self.value()
            if v is None:
                return
            yield v[1]


SYSTEMS = {"grid": Grid, "grid1": Grid1, "nats": Nats, "redis": Redis}


# -- the roles ------------------------------------------------------------------

def role_sub(c, topic, n, size):
    """OK is 1 when every batch ended with the message of its number:
    nothing lost, nothing out of order.  Gives up after 20 s of silence."""
    c.size = size
    c.subscribe(topic, size)
    c.sock.settimeout(20)
    print("ready", flush=True)
    got = 0
    first = last_t = None
    ok = True
    try:
        while got < n:
            k, last = c.receive()
            last_t = time.monotonic()
            if first is None:
                first = last_t
            got += k
            ok = ok and last == payload(got - 1, size)
    except (socket.timeout, EOFError):
        ok = False
    print(f"{first} {last_t} {got} {int(ok and got == n)}", flush=True)


def role_pub(c, topic, n, size, batch=BATCH):
    """All n messages as fast as the server takes them; exits once the
    server answered every one."""
    msgs = [payload(i, size) for i in range(n)]
    frames = [c.publish(topic, msgs[i:i + batch]) for i in range(0, n, batch)]
    answers = Answers(c.sock, c.answers(n, len(frames)))
    t0 = time.monotonic()
    for f in frames:
        c.sock.sendall(f)
    c.sock.sendall(getattr(c, "last", lambda: b"")())
    print(t0, flush=True)
    answers.join(120)


def role_lat(c, addr, topic, n, size):
    """From the publisher's write to the subscriber's read of the
    message; the publisher's answer (if its protocol has one) is read
    after, outside the time."""
    sub = type(c)(addr)
    sub.size = size
    sub.subscribe(topic, size)
    out = []
    for i in range(n):
        data = c.publish(topic, [payload(i, size)])
        t0 = time.perf_counter()
        c.sock.sendall(data)
        sub.receive()
        out.append((time.perf_counter() - t0) * 1e6)
        c.answered()
    print(" ".join("%.1f" % x for x in sorted(out)))


def role_take(c, queue, idle, path):
    """Each message written (unbuffered) before it is acknowledged, as
    gridcat take does: a taker killed between the two has it twice."""
    print("ready", flush=True)
    sys.stdin.readline()
    last = None
    count = 0
    with open(path, "wb", buffering=0) as f:
        for m in c.take(queue, idle):
            f.write(m + b"\n")
            count += 1
            last = time.monotonic()
    print(f"{last} {count}", flush=True)


def main(argv):
    system, addr, role, name, *rest = argv
    c = SYSTEMS[system](addr)
    name = name.encode()
    if role == "sub":
        role_sub(c, name, int(rest[0]), int(rest[1]))
    elif role == "pub":
        role_pub(c, name, int(rest[0]), int(rest[1]), *map(int, rest[2:3]))
    elif role == "lat":
        role_lat(c, addr, name, int(rest[0]), int(rest[1]))
    elif role == "fill":
        c.fill(name, [payload(i, int(rest[1])) for i in range(int(rest[0]))])
    elif role == "take":
        role_take(c, name, float(rest[0]), rest[1])
    else:
        raise SystemExit(f"loadgen: no role {role!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
