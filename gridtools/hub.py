"""gridd hub: accepts clients and workers on one selectors loop, pushes each
job to a worker the moment it has a free slot, relays input and output, and
keeps durable jobs in the journal.

Connections are plain objects with a read buffer (wire.Reader) and a write
buffer; writes are batched and flushed once per loop turn.  Memory per
connection is bounded: headers and bodies by the wire limits, relayed output
by the workers' per-job window (acknowledged only once the bytes have left
for the client), relayed input by pausing the sending client while a
worker's buffer is full.
"""

import json
import os
import selectors
import signal
import socket
import sys
import time

from gridtools import errors, journal, net, sched, wire

RECV = 1 << 18
HIGH = 4 << 20              # a write buffer past this pauses whoever fills it
HELD_MAX = 64 << 20         # input held for a client's queued jobs
JOBS_LISTED = 10000         # at most this many rows in a JOBS answer
LOW = 1 << 20               # ... and below this it resumes them
ACK_EVERY = 1 << 18         # acknowledge relayed output in steps of this
HANDSHAKE_TIMEOUT = 10.0
DRAIN_TIMEOUT = 30.0
EXPIRE_EVERY = 3600.0


def log(text):
    sys.stderr.write(f"gridd hub: {text}\n")
    sys.stderr.flush()


class Options:
    """What the hub needs from its command line."""

    def __init__(self, listen=(), state_dir=None, client_key=None, worker_key=None,
                 client_key_file=None, worker_key_file=None, tls=None, heartbeat=10.0,
                 keep=7 * 86400.0):
        self.listen = list(listen)
        self.state_dir = state_dir
        self.client_key = client_key
        self.worker_key = worker_key
        self.client_key_file = client_key_file
        self.worker_key_file = worker_key_file
        self.tls = tls
        self.heartbeat = heartbeat
        self.keep = keep


class Conn:
    __slots__ = ("sock", "fd", "peer", "role", "reader", "out", "nonce", "closing",
                 "born", "last_rx", "pinged", "slots", "jobs", "blocked", "paused",
                 "ackq", "feeders", "tls_hs", "events", "name", "tls", "held",
                 "blocked_by")

    def __init__(self, sock, peer, tls=False):
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.role = None
        self.reader = wire.Reader()
        self.out = bytearray()
        self.nonce = None
        self.closing = False
        self.born = self.last_rx = time.monotonic()
        self.pinged = False
        self.slots = None           # workers: sched.Slots
        self.jobs = None            # clients: cid -> sched.Job
        self.blocked = set()        # conns paused until our buffer drains
        self.paused = False
        self.ackq = set()           # jobs whose relayed output awaits an ACK
        self.feeders = []           # generators refilling out (results)
        self.tls_hs = tls
        self.tls = tls
        self.events = 0
        self.name = peer
        self.held = 0               # input bytes held for queued jobs
        self.blocked_by = 0         # write buffers this conn waits on


class Hub:
    def __init__(self, opts):
        self.opts = opts
        self.sel = selectors.DefaultSelector()
        self.sched = sched.Scheduler()
        self.listeners = []
        self.conns = {}             # fd -> Conn
        self.dirty = set()          # conns with bytes to flush
        self.ack_conns = set()
        self.busy = set()           # worker conns running jobs
        self.unauth = set()
        self.resumed = set()        # unpaused conns with messages buffered
        self.next_hid = 1
        self.durable = {}           # did -> Job (queued or running)
        self.after_commit = []      # callables run once the journal is committed
        self.journal = None
        self.draining = False
        self.drain_deadline = None
        self.stop = False
        self.next_expire = 0.0
        self.reload_keys = False
        self.addresses = []
        self.counts = {"done": 0, "lost": 0, "submitted": 0}
        self.started = time.time()
        self.handlers = {
            None: {"HELLO": self.on_hello},
            "client": {
                "RUN": self.on_run, "IN": self.on_in, "KILL": self.on_kill,
                "SUBMIT": self.on_submit, "RESULT": self.on_result, "FORGET": self.on_forget,
                "CANCEL": self.on_cancel, "STATUS": self.on_status, "WORKERS": self.on_workers,
                "JOBS": self.on_jobs, "DRAIN": self.on_drain, "SHUTDOWN": self.on_shutdown,
                "PING": self.on_ping, "PONG": self.on_pong, "QUIT": self.on_quit,
                "ERR": self.on_err,
            },
            "worker": {
                "READY": self.on_ready, "OUT": self.on_out, "DONE": self.on_done,
                "ACK": self.on_ack, "PING": self.on_ping, "PONG": self.on_pong,
                "QUIT": self.on_quit, "ERR": self.on_err,
            },
        }

    # -- start and the loop -------------------------------------------------

    def open(self):
        """Journal, then listeners; returns the addresses bound."""
        if self.opts.state_dir:
            self._lock_state()
            self.journal = journal.Journal(self.opts.state_dir)
            for row in self.journal.queued():
                did, command, argv, reqs, retries, timeout, tries = row
                job = self._new_job(command, bool(argv), False, journal.decode_reqs(reqs),
                                    retries, timeout)
                job.did = did
                job.tries = 0       # a hub restart is not the job's failure
                self.durable[did] = job
                self.sched.submit(job)
            if self.durable:
                log(f"journal: {len(self.durable)} unfinished durable jobs requeued")
        for addr in self.opts.listen:
            try:
                s = net.listen(addr)
            except OSError as e:
                raise errors.UnavailableError(f"cannot listen on {addr}: {e.strerror}")
            real = net.bound_address(s, addr)
            self.listeners.append((s, real))
            self.sel.register(s, selectors.EVENT_READ, ("accept", s, real))
            self.addresses.append(real)
            log(f"listening on {real}")
        return self.addresses

    def _lock_state(self):
        import fcntl
        os.makedirs(self.opts.state_dir, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.opts.state_dir, "lock"),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise errors.GridError(f"state dir {self.opts.state_dir} is in use by another hub",
                                   errors.TEMPFAIL)
        self._lockfd = fd

    def serve(self):
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        self.sel.register(wake_r, selectors.EVENT_READ, ("signal", wake_r, None))
        try:
            while not self.stop:
                timeout = self._timeout()
                for key, mask in self.sel.select(timeout):
                    kind, obj, extra = key.data
                    if kind == "conn":
                        self.on_event(obj, mask)
                    elif kind == "accept":
                        self.on_accept(obj, extra)
                    else:
                        self.on_signal(obj)
                self.turn()
                if self.draining and (self.idle() or time.monotonic() > self.drain_deadline):
                    break
        finally:
            self.turn()
            for conn in list(self.conns.values()):
                self.close(conn, quiet=True)
            for s, addr in self.listeners:
                self._close_listener(s, addr)
            if self.journal is not None:
                self.journal.close()
            signal.set_wakeup_fd(-1)
        log("stopped")
        return 0

    def turn(self):
        """End of a loop turn: commit, answer, flush, acknowledge, refill."""
        if self.journal is not None and self.journal.in_tx:
            self.journal.commit()
        if self.after_commit:
            todo, self.after_commit = self.after_commit, []
            for fn in todo:
                fn()
        self.flush_all()
        while self.resumed:
            self.process(self.resumed.pop())
            self.flush_all()
        if self.ack_conns:
            for conn in list(self.ack_conns):
                if len(conn.out) < LOW:
                    self.ack_conns.discard(conn)
                    for job in conn.ackq:
                        self.ack(job)
                    conn.ackq.clear()
            self.flush_all()
        now = time.monotonic()
        if (self.busy or self.unauth) and now >= getattr(self, "_next_tick", 0):
            self._next_tick = now + min(1.0, self.opts.heartbeat / 2)
            self.tick(now)
            self.flush_all()
        if self.journal is not None and now >= self.next_expire:
            self.next_expire = now + EXPIRE_EVERY
            n = self.journal.expire(time.time() - self.opts.keep)
            if n:
                log(f"journal: {n} uncollected results expired")

    def _timeout(self):
        t = None
        now = time.monotonic()
        if self.busy or self.unauth:
            t = max(0.0, getattr(self, "_next_tick", 0) - now)
        if self.journal is not None:
            e = max(0.0, self.next_expire - now)
            t = e if t is None else min(t, e)
        if self.draining:
            t = 0.2 if t is None else min(t, 0.2)
        return t

    def tick(self, now):
        hb = self.opts.heartbeat
        for conn in list(self.busy):
            quiet = now - conn.last_rx
            if quiet > 3 * hb:
                log(f"worker {conn.name} silent for {quiet:.0f}s: declared dead")
                self.close(conn)
            elif quiet > hb and not conn.pinged:
                conn.pinged = True
                self.send(conn, b"PING\n")
        for conn in list(self.unauth):
            if now - conn.born > HANDSHAKE_TIMEOUT:
                self.send(conn, wire.error(wire.E_PROTOCOL, "no HELLO in time"))
                self.close(conn)

    def idle(self):
        """Nothing running and no session job waiting: a drain may end."""
        if any(c.slots is not None and c.slots.jobs for c in self.conns.values()):
            return False
        return not any(j.did is None and j.state == sched.QUEUED
                       for q in self.sched.queues.values() for j in q)

    # -- signals --------------------------------------------------------------

    def on_signal(self, fd):
        try:
            data = os.read(fd, 64)
        except BlockingIOError:
            return
        for s in data:
            if s in (signal.SIGTERM, signal.SIGINT):
                self.start_drain(f"signal {signal.Signals(s).name}")
            elif s == signal.SIGHUP:
                self.reload()

    def start_drain(self, why):
        if self.draining:
            return
        log(f"{why}: draining (no new jobs; running ones finish, {DRAIN_TIMEOUT:.0f}s at most)")
        self.draining = True
        self.drain_deadline = time.monotonic() + DRAIN_TIMEOUT
        for s, addr in self.listeners:
            self._close_listener(s, addr)
        self.listeners = []

    def _close_listener(self, s, addr):
        try:
            self.sel.unregister(s)
        except (KeyError, ValueError):
            pass
        s.close()
        if addr.family == socket.AF_UNIX:
            try:
                os.unlink(addr.path)
            except OSError:
                pass

    def reload(self):
        o = self.opts
        try:
            if o.client_key_file:
                o.client_key = net.read_key(o.client_key_file)
            if o.worker_key_file:
                o.worker_key = net.read_key(o.worker_key_file)
            log("SIGHUP: keys reread")
        except errors.GridError as e:
            log(f"SIGHUP: keeping the old keys: {e}")

    # -- connections ----------------------------------------------------------

    def on_accept(self, lsock, addr):
        for _ in range(256):
            try:
                sock, peer = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log(f"accept on {addr}: {e.strerror}")
                return
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                net.tune(sock)
                peer = f"{peer[0]}:{peer[1]}"
            else:
                peer = f"unix:{addr.path}"
            tls = False
            if self.opts.tls is not None and sock.family != socket.AF_UNIX:
                sock = self.opts.tls.wrap_socket(sock, server_side=True,
                                                 do_handshake_on_connect=False)
                tls = True
            conn = Conn(sock, peer, tls)
            self.conns[conn.fd] = conn
            self.unauth.add(conn)
            conn.events = selectors.EVENT_READ
            self.sel.register(conn.fd, conn.events, ("conn", conn, None))
            if not tls:
                self.greet(conn)

    def greet(self, conn):
        conn.nonce = wire.new_nonce()
        o = self.opts
        needs = ",".join(r for r, k in (("client", o.client_key), ("worker", o.worker_key)) if k)
        self.send(conn, wire.hello("hub", conn.nonce,
                                   auth=wire.AUTH if needs else "none", keys=needs or None))

    def on_event(self, conn, mask):
        if conn.closing:
            return
        if conn.tls_hs:
            self.tls_handshake(conn)
            return
        if mask & selectors.EVENT_WRITE:
            self.flush(conn)
        if mask & selectors.EVENT_READ and not conn.paused:
            self.on_readable(conn)

    def tls_handshake(self, conn):
        import ssl
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want(conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._want(conn, selectors.EVENT_WRITE)
            return
        except (ssl.SSLError, OSError) as e:
            log(f"{conn.peer}: TLS handshake failed: {getattr(e, 'reason', None) or e}")
            self.close(conn, quiet=True)
            return
        conn.tls_hs = False
        self._want(conn, selectors.EVENT_READ)
        self.greet(conn)

    def _want(self, conn, events):
        if conn.closing or conn.events == events:
            return
        if events == 0:
            self.sel.unregister(conn.fd)
        elif conn.events == 0:
            self.sel.register(conn.fd, events, ("conn", conn, None))
        else:
            self.sel.modify(conn.fd, events, ("conn", conn, None))
        conn.events = events

    def recv(self, conn):
        try:
            data = conn.sock.recv(RECV)
            if conn.tls:
                while conn.sock.pending():
                    data += conn.sock.recv(conn.sock.pending())
            return data
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as e:
            if conn.tls and e.__class__.__name__ in ("SSLWantReadError", "SSLWantWriteError"):
                return None
            return b""

    def on_readable(self, conn):
        data = self.recv(conn)
        if data is None:
            return
        if not data:
            if conn.reader.pending():
                what = conn.reader.describe_pending()
                self.send(conn, wire.error(wire.E_PROTOCOL,
                                           f"connection closed in the middle of a message "
                                           f"({what})"))
                self.flush(conn)
            self.close(conn)
            return
        conn.last_rx = time.monotonic()
        conn.pinged = False
        conn.reader.feed(data)
        self.process(conn)

    def process(self, conn):
        """Handle the whole messages in conn's read buffer (until paused)."""
        while not conn.closing and not conn.paused:
            try:
                msg = next(conn.reader)
            except StopIteration:
                break
            except wire.WireError as e:
                self.send(conn, wire.error(e.code, str(e)))
                if e.fatal:
                    self.flush(conn)
                    self.close(conn)
                    return
                continue
            self.dispatch(conn, msg)

    def dispatch(self, conn, msg):
        table = self.handlers[conn.role]
        handler = table.get(msg.verb)
        if handler is None:
            if conn.role is None:
                self.send(conn, wire.error(wire.E_PROTOCOL,
                                           f"expected HELLO, got {msg.verb}"))
                return
            other = "worker" if conn.role == "client" else "client"
            if msg.verb in self.handlers[other]:
                self.send(conn, wire.error(wire.E_NOPERM,
                                           f"a {conn.role} connection cannot {msg.verb}"))
            else:
                self.send(conn, wire.error(wire.E_PROTOCOL, f"unknown verb {msg.verb}"))
            return
        try:
            handler(conn, msg)
        except wire.WireError as e:
            self.send(conn, wire.error(e.code, str(e)))

    def send(self, conn, data):
        if conn.closing:
            return
        conn.out += data
        self.dirty.add(conn)

    def flush_all(self):
        while self.dirty:
            conn = self.dirty.pop()
            self.flush(conn)

    def flush(self, conn):
        if conn.closing:
            return
        out = conn.out
        while out:
            try:
                n = conn.sock.send(out if len(out) <= RECV * 4 else out[:RECV * 4])
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if conn.tls and e.__class__.__name__ in ("SSLWantReadError",
                                                         "SSLWantWriteError"):
                    break
                self.close(conn)
                return
            del out[:n]
        if conn.feeders and len(out) < LOW:
            before = len(out)
            self.pump(conn)
            if len(out) > before and not conn.closing:
                self.dirty.add(conn)        # write what the feeders added
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if out else 0)
        if conn.paused:
            want &= ~selectors.EVENT_READ
        self._want(conn, want)
        if conn.blocked and len(out) < LOW:
            self.unblock(conn)

    def pause(self, conn, because):
        """Stop reading conn until because's write buffer drains."""
        if conn not in because.blocked:
            because.blocked.add(conn)
            conn.blocked_by += 1
        if not conn.paused:
            conn.paused = True
            self._want(conn, conn.events & ~selectors.EVENT_READ)

    def unblock(self, conn):
        for other in conn.blocked:
            other.blocked_by -= 1
            if not other.blocked_by and other.held <= HELD_MAX // 2:
                self.resume(other)
        conn.blocked.clear()

    def resume(self, conn):
        if conn.paused and not conn.closing:
            conn.paused = False
            self._want(conn, conn.events | selectors.EVENT_READ)
            # Whole messages may already wait in its read buffer.
            self.resumed.add(conn)

    def close(self, conn, quiet=False):
        if conn.closing:
            return
        conn.closing = True
        self.dirty.discard(conn)
        self.ack_conns.discard(conn)
        self.unauth.discard(conn)
        self.busy.discard(conn)
        self.resumed.discard(conn)
        if conn.events:
            self.sel.unregister(conn.fd)
        self.conns.pop(conn.fd, None)
        try:
            conn.sock.close()
        except OSError:
            pass
        self.unblock(conn)
        if conn.role == "worker":
            self.worker_gone(conn, quiet)
        elif conn.role == "client":
            self.client_gone(conn)

    # -- handshake ------------------------------------------------------------

    def on_hello(self, conn, msg):
        try:
            role, nonce = wire.check_hello(msg, roles=("client", "worker"))
        except wire.WireError as e:
            self.send(conn, wire.error(e.code, str(e)))
            self.flush(conn)
            self.close(conn)
            return
        key = self.opts.client_key if role == "client" else self.opts.worker_key
        if key is not None and not wire.check_mac(key, role, conn.nonce, nonce, msg.get("mac")):
            log(f"{conn.peer}: authentication as {role} failed")
            self.send(conn, wire.error(wire.E_NOPERM, f"authentication as {role} failed"))
            self.flush(conn)
            self.close(conn)
            return
        conn.role = role
        self.unauth.discard(conn)
        mac = wire.mac(key, "hub", nonce, conn.nonce) if key is not None else None
        self.send(conn, wire.format("WELCOME", wire.VERSION, role="hub", mac=mac,
                                    slots=self.total_slots()))
        if role == "client":
            conn.jobs = {}

    def total_slots(self):
        return sum(c.slots.slots for c in self.conns.values()
                   if c.slots is not None and not c.slots.draining)

    # -- workers --------------------------------------------------------------

    def on_ready(self, conn, msg):
        if conn.slots is not None:
            raise wire.WireError("READY: already announced", wire.E_USAGE)
        slots = msg.int("slots", 1, 1, 100000)
        name = msg.get("name") or conn.peer
        conn.name = name
        conn.slots = sched.Slots(name, slots, wire.parse_tags(msg.kv, "tag."))
        log(f"worker {name} joined from {conn.peer} with {slots} slots")
        if self.draining:
            conn.slots.draining = True
            return
        for job in self.sched.credit(conn, conn.slots):
            self.start(conn, job)

    def start(self, wconn, job):
        """Job was given to worker wconn: send it, and its held stdin."""
        self.busy.add(wconn)
        job.started = time.time()
        self.send(wconn, wire.format("RUN", job.hid, argv=job.argv, stdin=job.stdin,
                                     timeout=job.timeout, body=job.command))
        if job.inq:
            for chunk in job.inq:
                self.send(wconn, wire.format("IN", job.hid, body=chunk))
            job.inq = []
            self.unhold(job)
        if job.in_eof:
            self.send(wconn, wire.format("IN", job.hid, eof=1, body=b""))
        if job.did is not None:
            self.reset_output(job)

    def push(self, job):
        """Queue a job, or send it to a free worker at once."""
        wconn = self.sched.submit(job)
        if wconn is not None:
            self.start(wconn, job)

    def wjob(self, conn, msg):
        if conn.slots is None:
            raise wire.WireError(f"{msg.verb}: say READY first", wire.E_PROTOCOL)
        arg = msg.arg(0)
        job = conn.slots.jobs.get(int(arg)) if arg.isdigit() else None
        return job

    def on_out(self, conn, msg):
        job = self.wjob(conn, msg)
        data = msg.body or b""
        if job is None:
            return          # finished or cancelled meanwhile
        fd_no = msg.int("fd", 1, 1, 2)
        client = job.client
        if client is not None and not client.closing:
            self.send(client, wire.format("OUT", job.cid, fd=fd_no, body=data))
            job.acks += len(data)
            if job.acks >= ACK_EVERY:
                client.ackq.add(job)
                self.ack_conns.add(client)
            return
        if job.did is not None and self.journal is not None:
            fds = job.outfds
            fd = fds.get(fd_no)
            if fd is None:
                fd = fds[fd_no] = os.open(self.journal.out_path(job.did, fd_no),
                                          os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                                          0o600)
            try:
                os.write(fd, data)
            except OSError as e:
                log(f"job {job.did}: cannot store output: {e.strerror}")
            if job.waiters:
                self.wake(job)
        job.acks += len(data)
        if job.acks >= ACK_EVERY:
            self.ack(job)

    def ack(self, job):
        if job.acks and job.worker is not None and not job.worker.closing:
            self.send(job.worker, wire.format("ACK", job.hid, n=job.acks))
        job.acks = 0

    def on_ack(self, conn, msg):
        """The worker fed n bytes of a job's stdin to it: tell the client."""
        job = self.wjob(conn, msg)
        if job is not None and job.client is not None:
            self.send(job.client, wire.format("ACK", job.cid, n=msg.int("n", 0)))

    def on_done(self, conn, msg):
        job = self.wjob(conn, msg)
        if job is None:
            return
        exitcode = msg.int("exit")
        sig = msg.int("sig", None, 1, 64)
        outcome = msg.get("outcome")
        self.sched.release(conn, conn.slots, job)
        if not conn.slots.jobs:
            self.busy.discard(conn)
        self.finished(job, exitcode, sig, outcome, conn.name)
        if conn.slots.draining and not conn.slots.jobs:
            self.send(conn, b"BYE\n")
        for nxt in self.sched.credit(conn, conn.slots):
            self.start(conn, nxt)

    def finished(self, job, exitcode, sig, outcome, worker):
        """One try of a job ended: report it, retry it, or record it."""
        self.ackq_drop(job)
        if job.did is None:
            client = job.client
            if client is not None and not client.closing:
                client.jobs.pop(job.cid, None)
                self.send(client, wire.format("DONE", job.cid, exit=exitcode, sig=sig,
                                              outcome=outcome, worker=worker))
            job.state = sched.DONE
            self.counts["done"] += 1
            return
        self.close_output(job)
        if outcome is None:
            outcome = "ok" if exitcode == 0 else "signal" if sig is not None else "failed"
        if outcome != "ok" and outcome != "cancelled" and not job.cancelled \
                and job.tries <= job.retries and not self.draining:
            log(f"job {job.did}: {outcome}; retry {job.tries} of {job.retries}")
            self.push(job)
            return
        if job.cancelled:
            outcome = "cancelled"
        job.state = sched.DONE
        self.durable.pop(job.did, None)
        self.journal.finish(job.did, job.tries, exitcode, sig, outcome, worker)
        self.counts["done"] += 1
        self.after_commit.append(lambda: self.committed(job))

    def committed(self, job):
        """job's result is durable: its followers may have the DONE now."""
        job.committed = True
        self.wake(job)
        job.waiters = []

    def wake(self, job):
        for c in job.waiters:
            if not c.closing:
                self.dirty.add(c)

    def ackq_drop(self, job):
        if job.client is not None:
            job.client.ackq.discard(job)
        job.acks = 0

    def worker_gone(self, conn, quiet):
        if conn.slots is None:
            return
        jobs = self.sched.remove_worker(conn, conn.slots)
        if not quiet:
            log(f"worker {conn.name} left ({len(jobs)} jobs running)")
        for job in jobs:
            job.worker = None
            if job.did is None:
                self.counts["lost"] += 1
                self.finished(job, None, None, "lost", conn.name)
            elif job.cancelled:
                self.finished(job, None, None, "cancelled", conn.name)
            elif self.draining and quiet:
                self.close_output(job)      # stays queued in the journal
            elif job.tries <= job.retries:
                log(f"job {job.did}: worker {conn.name} lost; requeued")
                self.close_output(job)
                self.push(job)
            else:
                self.counts["lost"] += 1
                self.finished(job, None, None, "lost", conn.name)

    # -- session jobs (gridmap) -------------------------------------------------

    def _new_job(self, command, argv, stdin, reqs, retries, timeout):
        job = sched.Job(self.next_hid, command, argv, stdin, reqs, retries, timeout)
        self.next_hid += 1
        job.submitted = time.time()
        return job

    def _job_options(self, msg):
        reqs = frozenset(wire.parse_tags(msg.kv, "req.").items())
        timeout = msg.get("timeout")
        if timeout is not None:
            try:
                timeout = float(timeout)
            except ValueError:
                raise wire.WireError(f"{msg.verb}: timeout= needs seconds, got {timeout!r}",
                                     wire.E_USAGE)
            if not timeout > 0:
                raise wire.WireError(f"{msg.verb}: timeout= must be positive", wire.E_USAGE)
        return reqs, timeout

    def refuse_new(self, conn, cid=None):
        if self.draining:
            self.send(conn, wire.error(wire.E_UNAVAILABLE, "the hub is shutting down",
                                       job=cid))
            return True
        return False

    def on_run(self, conn, msg):
        cid = msg.arg(0)
        if self.refuse_new(conn, cid):
            return
        if cid in conn.jobs:
            raise wire.WireError(f"RUN: job {cid} is already running", wire.E_USAGE)
        if not msg.body:
            raise wire.WireError("RUN: needs a command as its body (bytes=N)", wire.E_USAGE)
        reqs, timeout = self._job_options(msg)
        job = self._new_job(msg.body, msg.get("argv") == "1", msg.get("stdin") == "1",
                            reqs, 0, timeout)
        job.client = conn
        job.cid = cid
        conn.jobs[cid] = job
        self.push(job)

    def cjob(self, conn, msg):
        job = conn.jobs.get(msg.arg(0))
        if job is None:
            raise wire.WireError(f"{msg.verb}: no running job {msg.arg(0)}", wire.E_DATA)
        return job

    def on_in(self, conn, msg):
        job = self.cjob(conn, msg)
        eof = msg.get("eof") == "1"
        data = msg.body or b""
        if job.worker is not None:
            w = job.worker
            self.send(w, wire.format("IN", job.hid, eof=eof, body=data))
            if len(w.out) > HIGH:
                self.pause(conn, w)
            return
        if data:
            job.inq.append(data)
            job.held += len(data)
            conn.held += len(data)
            if conn.held > HELD_MAX and not conn.paused:
                # Input for jobs still queued: stop reading this client
                # until some of them have a worker to take it.
                conn.paused = True
                self._want(conn, conn.events & ~selectors.EVENT_READ)
        job.in_eof = job.in_eof or eof

    def unhold(self, job):
        """job's held input left the hub (sent on, or dropped)."""
        client = job.client
        if client is not None and job.held:
            client.held -= job.held
            if client.paused and client.held < HELD_MAX // 2 and not client.blocked_by:
                self.resume(client)
        job.held = 0

    def on_kill(self, conn, msg):
        job = self.cjob(conn, msg)
        sig = msg.int("sig", signal.SIGTERM, 1, 64)
        if job.worker is not None:
            self.send(job.worker, wire.format("KILL", job.hid, sig=sig))
        else:
            # Killed before it started: it ends here, as if by the signal.
            self.sched.dequeue(job)
            job.inq = []
            self.unhold(job)
            conn.jobs.pop(job.cid, None)
            self.send(conn, wire.format("DONE", job.cid, sig=sig, outcome="cancelled"))

    def client_gone(self, conn):
        for job in conn.jobs.values():
            job.client = None
            if job.worker is not None:
                self.send(job.worker, wire.format("CANCEL", job.hid))
                self.ack(job)
            else:
                self.sched.dequeue(job)
                job.inq = []
        conn.jobs.clear()

    # -- durable jobs (gridsub) -------------------------------------------------

    def on_submit(self, conn, msg):
        if self.refuse_new(conn):
            return
        if self.journal is None:
            raise wire.WireError("this hub keeps no journal (no --state)", wire.E_UNAVAILABLE)
        if not msg.body:
            raise wire.WireError("SUBMIT: needs a command as its body (bytes=N)", wire.E_USAGE)
        reqs, timeout = self._job_options(msg)
        retries = msg.int("retries", 0, 0, 1000)
        argv = msg.get("argv") == "1"
        did = self.journal.add(msg.body, argv, reqs, retries, timeout)
        job = self._new_job(msg.body, argv, False, reqs, retries, timeout)
        job.did = did
        self.durable[did] = job
        self.counts["submitted"] += 1
        ref = msg.get("ref")
        # Acknowledge only once the journal is committed (end of this turn).
        self.after_commit.append(lambda: (self.send(conn, wire.format("JOB", did, ref=ref)),
                                          self.push(job)))

    def reset_output(self, job):
        self.close_output(job)
        job.outfds = {}
        job.attempt += 1
        self.wake(job)
        for fd_no in (1, 2):
            try:
                os.unlink(self.journal.out_path(job.did, fd_no))
            except FileNotFoundError:
                pass

    def close_output(self, job):
        if job.outfds:
            for fd in job.outfds.values():
                os.close(fd)
        job.outfds = {}

    def durable_id(self, msg):
        arg = msg.arg(0)
        if not arg.isdigit():
            raise wire.WireError(f"{msg.verb}: not a job id: {arg!r}", wire.E_USAGE)
        return int(arg)

    def on_result(self, conn, msg):
        did = self.durable_id(msg)
        job = self.durable.get(did)
        if job is not None:
            if msg.get("wait") != "1":
                self.send(conn, wire.format("PENDING", did, state=job.state))
                return
            # Follow it: what it wrote so far, then the rest as it comes.
            job.waiters.append(conn)
        elif self.journal is None or self.journal.get(did) is None:
            raise wire.WireError(f"no such job {did} (never submitted, or collected)",
                                 wire.E_DATA)
        conn.feeders.append(self._tail(did, job))
        self.dirty.add(conn)

    def _tail(self, did, job):
        """OUT messages from a durable job's stored output, like tail -f,
        then its DONE once the result is in the journal.  Yields None when
        there is nothing more yet (the job's next output wakes us)."""
        offsets = {1: 0, 2: 0}
        files = {}
        attempt = job.attempt if job is not None else 0
        try:
            while True:
                if job is not None and job.attempt != attempt:
                    # A retry started afresh: follow the new output files.
                    attempt = job.attempt
                    for f in files.values():
                        os.close(f)
                    files.clear()
                    offsets = {1: 0, 2: 0}
                finished = job is None or job.committed
                progressed = False
                for fd_no in (1, 2):
                    fd = files.get(fd_no)
                    if fd is None:
                        try:
                            fd = files[fd_no] = os.open(self.journal.out_path(did, fd_no),
                                                        os.O_RDONLY | os.O_CLOEXEC)
                        except FileNotFoundError:
                            continue
                    data = os.pread(fd, 1 << 18, offsets[fd_no])
                    if data:
                        offsets[fd_no] += len(data)
                        progressed = True
                        yield wire.format("OUT", did, fd=fd_no, body=data)
                if progressed:
                    continue
                if finished:
                    break
                yield None
        finally:
            for f in files.values():
                os.close(f)
        row = self.journal.get(did)
        if row is None:
            yield wire.error(wire.E_DATA, f"no such job {did}", job=did)
            return
        yield wire.format("DONE", did, exit=row["exit"], sig=row["sig"],
                          outcome=row["outcome"], tries=row["tries"], worker=row["worker"])

    def pump(self, conn):
        while conn.feeders and len(conn.out) < HIGH:
            try:
                chunk = next(conn.feeders[0])
            except StopIteration:
                conn.feeders.pop(0)
                continue
            if chunk is None:
                break               # following a job that has more to say
            conn.out += chunk

    def on_forget(self, conn, msg):
        did = self.durable_id(msg)
        if did in self.durable:
            raise wire.WireError(f"FORGET: job {did} has not finished", wire.E_USAGE)
        if self.journal is None or self.journal.get(did) is None:
            raise wire.WireError(f"no such job {did}", wire.E_DATA)
        self.journal.forget(did)
        self.after_commit.append(lambda: self.send(conn, wire.format("OK", did)))

    def on_cancel(self, conn, msg):
        arg = msg.arg(0)
        job = None
        if arg.isdigit():
            job = self.durable.get(int(arg))
        elif arg.startswith("s") and arg[1:].isdigit():
            hid = int(arg[1:])
            for c in self.conns.values():
                if c.slots is not None and hid in c.slots.jobs:
                    job = c.slots.jobs[hid]
            for q in self.sched.queues.values():
                for j in q:
                    if j.hid == hid and j.state == sched.QUEUED:
                        job = j
        if job is None:
            raise wire.WireError(f"CANCEL: no queued or running job {arg}", wire.E_DATA)
        job.cancelled = True
        if job.worker is not None:
            self.send(job.worker, wire.format("CANCEL", job.hid))
        elif job.state == sched.QUEUED:
            self.sched.dequeue(job)
            self.finished(job, None, None, "cancelled", None)
        self.send(conn, wire.format("OK", arg))

    # -- control (gridd ctl) ----------------------------------------------------

    def info(self, conn, what, data):
        body = json.dumps(data, sort_keys=True).encode()
        self.send(conn, wire.format("INFO", what, body=body))

    def worker_rows(self):
        rows = []
        for c in self.conns.values():
            if c.slots is None:
                continue
            s = c.slots
            rows.append({"name": s.name, "peer": c.peer, "slots": s.slots,
                         "running": len(s.jobs), "tags": s.tags,
                         "state": "draining" if s.draining else "up"})
        return rows

    def on_status(self, conn, msg):
        workers = self.worker_rows()
        clients = sum(1 for c in self.conns.values() if c.role == "client")
        self.info(conn, "status", {
            "addresses": [str(a) for a in self.addresses],
            "workers": len(workers), "slots": sum(w["slots"] for w in workers),
            "running": sum(w["running"] for w in workers),
            "queued": self.sched.waiting(), "clients": clients,
            "durable": len(self.durable), "done": self.counts["done"],
            "lost": self.counts["lost"], "submitted": self.counts["submitted"],
            "uptime": round(time.time() - self.started, 1),
            "state": "draining" if self.draining else "up",
            "journal": self.opts.state_dir})

    def on_workers(self, conn, msg):
        self.info(conn, "workers", self.worker_rows())

    def on_jobs(self, conn, msg):
        rows = []

        def row(job, where):
            cmd = job.command
            text = " ".join(wire.decode_argv(cmd)) if job.argv else cmd.decode(
                "utf-8", "replace")
            rows.append({"id": job.name, "state": job.state, "worker": where,
                         "tries": job.tries, "kind": "durable" if job.did else "session",
                         "command": text[:200]})
        for c in self.conns.values():
            if c.slots is not None:
                for job in c.slots.jobs.values():
                    row(job, c.name)
        for q in self.sched.queues.values():
            for job in q:
                if job.state == sched.QUEUED and len(rows) < JOBS_LISTED:
                    row(job, None)
        self.info(conn, "jobs", rows)

    def on_drain(self, conn, msg):
        name = msg.arg(0)
        found = [c for c in self.conns.values() if c.slots is not None and c.slots.name == name]
        if not found:
            raise wire.WireError(f"DRAIN: no worker named {name!r}", wire.E_DATA)
        for c in found:
            self.sched.drain(c, c.slots)
            if not c.slots.jobs:
                self.send(c, b"BYE\n")
            log(f"worker {name}: draining")
        self.send(conn, wire.format("OK", name))

    def on_shutdown(self, conn, msg):
        self.send(conn, wire.format("OK", "shutdown"))
        self.start_drain(f"shutdown asked by {conn.peer}")

    def on_ping(self, conn, msg):
        self.send(conn, b"PONG\n")

    def on_pong(self, conn, msg):
        pass

    def on_quit(self, conn, msg):
        self.send(conn, b"BYE\n")
        self.flush(conn)
        self.close(conn)

    def on_err(self, conn, msg):
        log(f"{conn.name} says: ERR {' '.join(msg.args)}")


def default_state_dir(env):
    base = env.get("XDG_STATE_HOME")
    if not base or not os.path.isabs(base):
        base = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "gridd")
