"""The hub's HTTP side (gridd hub --http ADDR), on the hub's own loop and
read-only: Prometheus metrics at /metrics (text exposition format 0.0.4),
the status page at / (gridtools.hub.page), the event feed as Server-Sent
Events at /events, and /status.json, /workers.json, /streams.json.

Each request is one connection (HTTP/1.0 or 1.1, `Connection: close`):
the head is at most HEAD_MAX bytes and must arrive within TIMEOUT seconds,
and at most MAX_CONNS are served at once (more are closed at accept).  An
/events follower whose unsent events pass SSE_MAX bytes is closed (a
browser's EventSource comes back by itself).
"""

import hmac
import json
import os
import re
import socket
from urllib.parse import unquote

from gridtools.hub import sched
from gridtools.io import net
from gridtools.proto import errors

HEAD_MAX = 8192             # bytes of request line and headers
TIMEOUT = 10.0              # seconds for a request to arrive and its answer to leave
MAX_CONNS = 64              # HTTP connections served at once
SSE_MAX = 256 << 10         # unsent event bytes one /events follower may have
KIND = re.compile(r"[a-z][a-z.]{0,31}\Z")
TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{1,256}\Z")

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def metrics(status, workers, queues, outcomes, streams, proc, traffic):
    """The exposition text (pure): status as `gridd ctl status --json`
    gives it, workers as its worker rows, queues {requirement: queued},
    outcomes {outcome: jobs}, streams [(kind, name, messages, bytes)],
    proc {cpu_seconds, resident_bytes}, traffic {conns: {role: n},
    received, sent, commits, commit_seconds, lags: [(topic, n)]}."""
    out = []

    def metric(name, kind, text, samples):
        out.append(f"# HELP {name} {text}\n# TYPE {name} {kind}\n")
        for labels, value in samples:
            lab = ",".join(f'{k}="{_label(v)}"' for k, v in labels)
            out.append(f"{name}{{{lab}}} {value}\n" if lab else f"{name} {value}\n")

    by_how = {}
    for w in workers:
        by_how[w["how"]] = by_how.get(w["how"], 0) + 1
    metric("gridd_workers", "gauge", "Workers connected, by how they came.",
           [((("how", h),), n) for h, n in sorted(by_how.items())] or [((), 0)])
    tagged = {}
    for w in workers:
        for k, v in w["tags"].items():
            tagged[f"{k}={v}"] = tagged.get(f"{k}={v}", 0) + 1
    metric("gridd_workers_tagged", "gauge", "Workers offering a tag.",
           [((("tag", t),), n) for t, n in sorted(tagged.items())])
    metric("gridd_slots", "gauge", "Slots the workers offer.", [((), status["slots"])])
    metric("gridd_slots_busy", "gauge", "Slots running a job.", [((), status["running"])])
    metric("gridd_jobs_queued", "gauge", "Jobs waiting for a slot, by requirement.",
           [((("requires", req),), n) for req, n in sorted(queues.items())] or [((), 0)])
    metric("gridd_jobs_running", "gauge", "Jobs running on workers.",
           [((), status["running"])])
    metric("gridd_jobs_total", "counter", "Jobs ended (a durable job once, with its "
           "last try), by outcome.",
           [((("outcome", o),), n) for o, n in sorted(outcomes.items())])
    metric("gridd_durable_jobs_submitted_total", "counter",
           "Durable jobs stored in the journal.", [((), status["submitted"])])
    metric("gridd_connections", "gauge", "Connections, by the role they said in HELLO "
           "(none: not yet).", [((("role", r),), n) for r, n in sorted(traffic["conns"].items())])
    metric("gridd_received_bytes_total", "counter", "Bytes read from peers.",
           [((), traffic["received"])])
    metric("gridd_sent_bytes_total", "counter", "Bytes sent to peers.",
           [((), traffic["sent"])])
    metric("gridd_journal_bytes", "gauge", "Size of the journal and its write-ahead log.",
           [((), traffic["journal_bytes"])])
    metric("gridd_journal_commits_total", "counter", "Journal commits (one a loop turn "
           "at most).", [((), traffic["commits"])])
    metric("gridd_journal_commit_seconds_total", "counter", "Time spent in journal commits.",
           [((), f"{traffic['commit_seconds']:.6f}")])
    metric("gridd_topic_lag_messages", "gauge", "Messages the furthest-behind subscriber of "
           "a topic has yet to get.", [((("topic", n),), lag) for n, lag in traffic["lags"]])
    metric("gridd_journal_ok", "gauge", "1 while the journal can write.",
           [((), 1 if status["journal_state"] == "ok" else 0)])
    metric("gridd_stream_messages", "gauge", "Messages retained in a topic or queued.",
           [((("kind", k), ("name", n)), m) for k, n, m, _ in streams])
    metric("gridd_stream_bytes", "gauge", "Bytes retained in a topic or queued.",
           [((("kind", k), ("name", n)), b) for k, n, _, b in streams])
    metric("process_cpu_seconds_total", "counter", "CPU time of the hub process.",
           [((), f"{proc['cpu_seconds']:.2f}")])
    metric("process_resident_memory_bytes", "gauge", "Resident memory of the hub.",
           [((), proc["resident_bytes"])])
    metric("gridd_uptime_seconds", "gauge", "Seconds since the hub started.",
           [((), status["uptime"])])
    return "".join(out)


def _label(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def own_process():
    """This process's CPU seconds and resident bytes, from /proc."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    with open("/proc/self/statm") as f:
        resident = int(f.read().split()[1])
    return {"cpu_seconds": (int(fields[11]) + int(fields[12])) / CLK_TCK,
            "resident_bytes": resident * PAGE}


def parse_head(head):
    """(method, path, query) of a request head (bytes up to the blank
    line), or raise ValueError naming what is wrong."""
    line = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise ValueError("not an HTTP/1.x request line")
    method, target = parts[0], parts[1]
    if not target.startswith(b"/") or not all(0x21 <= b < 0x7F for b in target):
        raise ValueError("bad request target")
    path, _, query = target.decode("ascii").partition("?")
    return method.decode("ascii", "replace"), path, query


def parse_query(query):
    """{"kinds": [...], "token": "..."} from a query string: kinds= the
    prefixes of the event kinds wanted (/events), token= the --http-token.
    ValueError for anything else."""
    out = {}
    for part in query.split("&") if query else ():
        name, _, value = part.partition("=")
        if name == "kinds" and "kinds" not in out:
            kinds = value.split(",")
            if not 1 <= len(kinds) <= 16 or not all(KIND.match(k) for k in kinds):
                raise ValueError("kinds= takes 1 to 16 prefixes of a-z and dots")
            out["kinds"] = kinds
        elif name == "token" and "token" not in out and TOKEN.match(unquote(value)):
            out["token"] = unquote(value)
        else:
            raise ValueError("the query may hold only kinds= and token=")
    return out


def bearer(head):
    """The token of an `Authorization: Bearer TOKEN` header, or None."""
    for line in head.split(b"\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer":
                return token.strip().decode("ascii", "replace")
    return None


class Client:
    __slots__ = ("sock", "fd", "head", "out", "timer", "follow", "writing")

    def __init__(self, sock):
        self.sock = sock
        self.fd = sock.fileno()
        self.head = bytearray()
        self.out = b""
        self.timer = None
        self.follow = None          # /events: the listener streams calls
        self.writing = False


class Http:
    """A service with no protocol verbs: its own listener on the loop."""

    verbs = {}

    def __init__(self, server, control, streams, sessions, durable, addr, token=None):
        self.server = server
        self.control = control
        self.streams = streams
        self.sessions = sessions
        self.durable = durable
        self.addr = addr
        self.token = token          # --http-token: bytes every request must carry
        self.lsock = None
        self.clients = {}           # fd -> Client
        self.routes = {"/metrics": self.get_metrics, "/status.json": self.get_status,
                       "/workers.json": self.get_workers, "/streams.json": self.get_streams,
                       "/failures.json": self.get_failures,
                       "/": self.get_page}

    def opened(self, conn):
        pass

    def closed(self, conn, quiet):
        pass

    def start(self):
        """Listen (addr: an Address, or a listening socket systemd passed);
        the address bound (port 0 picks one)."""
        if hasattr(self.addr, "accept"):
            self.lsock = self.addr
            self.lsock.setblocking(False)
            real = net.socket_address(self.lsock)
        else:
            self.lsock = net.listen(self.addr)
            real = net.bound_address(self.lsock, self.addr)
        self.server.loop.add_reader(self.lsock.fileno(), self.accept)
        return real

    def stop(self):
        for c in list(self.clients.values()):
            self.drop(c)
        if self.lsock is not None:
            self.server.loop.remove_reader(self.lsock.fileno())
            self.lsock.close()
            self.lsock = None

    # -- connections -------------------------------------------------------------

    def accept(self):
        try:
            sock, _ = self.lsock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as e:
            self.server.log(f"http: accept: {e.strerror or e}")
            return
        if len(self.clients) >= MAX_CONNS:
            sock.close()
            return
        sock.setblocking(False)
        c = self.clients[sock.fileno()] = Client(sock)
        self.server.loop.add_reader(c.fd, self.guarded, self.readable, c)
        c.timer = self.server.call_later(TIMEOUT, self.drop, c)

    def guarded(self, fn, c):
        """A failure while serving one request costs that request alone."""
        try:
            fn(c)
        except Exception as e:  # noqa: BLE001 - the hub outlives its bugs
            self.server.log(f"http: internal error: {type(e).__name__}: {e}")
            self.drop(c)

    def readable(self, c):
        data = _recv(c.sock, HEAD_MAX + 1 - len(c.head))
        if data is None:
            return
        if not data:
            self.drop(c)
            return
        c.head += data
        end = c.head.find(b"\r\n\r\n")
        if end < 0:
            end = c.head.find(b"\n\n")
        if end < 0:
            if len(c.head) > HEAD_MAX:
                self.answer(c, 431, "text/plain", b"request head too large\n")
            return
        self.server.loop.remove_reader(c.fd)
        try:
            head = bytes(c.head[:end])
            method, path, query = parse_head(head)
            query = parse_query(query)
        except ValueError as e:
            self.answer(c, 400, "text/plain", f"{e}\n".encode())
            return
        if self.token is not None:
            given = query.get("token") or bearer(head) or ""
            if not hmac.compare_digest(given.encode(), self.token):
                self.answer(c, 401, "text/plain", b"a token is needed (?token= or "
                            b"Authorization: Bearer)\n")
                return
        route = self.routes.get(path)
        if path == "/events" and method == "GET":
            self.follow_events(c, query.get("kinds"))
        elif route is None:
            self.answer(c, 404, "text/plain", b"not found: try /, /metrics or /events\n")
        elif method not in ("GET", "HEAD"):
            self.answer(c, 405, "text/plain", b"only GET and HEAD\n", allow="GET, HEAD")
        else:
            ctype, body = route()
            self.answer(c, 200, ctype, b"" if method == "HEAD" else body, length=len(body))

    def answer(self, c, code, ctype, body, length=None, allow=None):
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
                  405: "Method Not Allowed", 431: "Request Header Fields Too Large"}[code]
        head = (f"HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body) if length is None else length}\r\n"
                f"Cache-Control: no-store\r\nConnection: close\r\n"
                + (f"Allow: {allow}\r\n" if allow else "") + "\r\n")
        self.server.loop.remove_reader(c.fd)
        self.send(c, head.encode("ascii") + body)

    def send(self, c, data):
        c.out += data
        if not c.writing:
            c.writing = True
            self.server.loop.add_writer(c.fd, self.guarded, self.writable, c)

    def writable(self, c):
        try:
            n = c.sock.send(c.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.drop(c)
            return
        c.out = c.out[n:]
        if c.out:
            return
        c.writing = False
        self.server.loop.remove_writer(c.fd)
        if c.follow is None:
            self.drop(c)

    def follow_events(self, c, kinds):
        """/events: the hub's events as they happen, one `data:` each;
        with kinds, only those whose kind starts with one of them."""
        c.timer.cancel()
        c.timer = None

        def follow(line):
            if len(c.out) > SSE_MAX:
                self.drop(c)                # too far behind: it may come back
            else:
                self.send(c, b"data: " + line + b"\n\n")
        c.follow = follow
        self.streams.listen(follow, kinds)
        self.send(c, b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Cache-Control: no-store\r\nConnection: close\r\n\r\n"
                     b": the hub's events, one a line\n\n")
        # It says nothing more; a read tells us when it goes.
        self.server.loop.add_reader(c.fd, self.guarded, self.gone, c)

    def gone(self, c):
        if _recv(c.sock, 4096) == b"":
            self.drop(c)

    def drop(self, c):
        if self.clients.pop(c.fd, None) is None:
            return
        self.server.loop.remove_reader(c.fd)
        self.server.loop.remove_writer(c.fd)
        if c.timer is not None:
            c.timer.cancel()
        if c.follow is not None:
            self.streams.unlisten(c.follow)
            c.follow = None
        try:
            c.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        c.sock.close()

    # -- pages ------------------------------------------------------------------------

    def journal_bytes(self):
        j = self.durable.journal
        size = 0
        for path in (j.path, j.path + "-wal") if j is not None else ():
            try:
                size += os.path.getsize(path)
            except OSError:
                pass
        return size

    def get_page(self):
        from gridtools.hub.page import PAGE
        return "text/html; charset=utf-8", PAGE.encode()

    def get_workers(self):
        return "application/json", (json.dumps(self.control.worker_rows(), sort_keys=True)
                                     + "\n").encode()

    def get_failures(self):
        return "application/json", (json.dumps(list(self.sessions.failures)[::-1],
                                               sort_keys=True) + "\n").encode()

    def get_streams(self):
        rows = [{"kind": kind, "name": name, "messages": n, "bytes": size, "readers": readers}
                for kind, name, n, size, readers in self.streams.depths(readers=True)]
        return "application/json", (json.dumps(rows, sort_keys=True) + "\n").encode()

    def get_status(self):
        return "application/json", (json.dumps(self.control.status(), sort_keys=True)
                                     + "\n").encode()

    def get_metrics(self):
        queues = {}
        for reqs, q in self.sessions.sched.queues.items():
            n = sum(1 for j in q if j.state == sched.QUEUED)
            if n:
                key = ",".join(f"{k}={v}" for k, v in sorted(reqs)) or "none"
                queues[key] = queues.get(key, 0) + n
        outcomes = dict(self.sessions.outcomes)
        for o, n in self.durable.outcomes.items():
            outcomes[o] = outcomes.get(o, 0) + n
        streams = self.streams.depths()
        conns = {}
        for c in self.server.conns.values():
            conns[c.role or "none"] = conns.get(c.role or "none", 0) + 1
        traffic = {"conns": conns, "received": self.server.received,
                   "sent": self.server.sent_closed + sum(c.sent for c in
                                                         self.server.conns.values()),
                   "commits": self.durable.commits, "commit_seconds": self.durable.commit_seconds,
                   "lags": self.streams.lags(), "journal_bytes": self.journal_bytes()}
        text = metrics(self.control.status(), self.control.worker_rows(), queues, outcomes,
                       streams, own_process(), traffic)
        return "text/plain; version=0.0.4; charset=utf-8", text.encode()


def check_address(addr, insecure, token):
    """--http: loopback unless a token guards it or --insecure."""
    if not addr.is_loopback and not insecure and token is None:
        raise errors.UsageError(f"--http: refusing {addr}, not a loopback address, "
                                f"without --http-token or --insecure")
    return addr


def _recv(sock, n):
    """Up to n bytes; b"" when the peer closed or the socket failed, None
    when nothing is there yet."""
    try:
        return sock.recv(n)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""
