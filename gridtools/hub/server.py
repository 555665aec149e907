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

import os
import selectors
import signal
import socket
import time

from gridtools.hub import journal, sched
from gridtools.hub import durable as hubdurable
from gridtools.hub import jobs as hubjobs
from gridtools.hub import names as hubnames
from gridtools.io import net
from gridtools.proto import errors, keys, wire
from gridtools.hub.jobs import NOTE_AFTER, log
from gridtools.hub.sched import HELD_MAX, HIGH, LOW

RECV = 1 << 18
HANDSHAKE_TIMEOUT = 10.0
DRAIN_TIMEOUT = 30.0
EXPIRE_EVERY = 3600.0
STORE_RETRY = 2.0           # seconds between tries of a journal that could not write
MAX_JOBS = 10000            # session jobs (queued or running) per client before it is paused
STALL_TIMEOUT = 60.0        # seconds a client may read nothing while its jobs hold slots


class Options:
    """What the hub needs from its command line."""

    def __init__(self, listen=(), state_dir=None, client_key=None, worker_key=None,
                 client_key_file=None, worker_key_file=None, tls=None, heartbeat=10.0,
                 keep=7 * 86400.0, debug=False, max_jobs=MAX_JOBS,
                 stall_timeout=STALL_TIMEOUT):
        self.listen = list(listen)
        self.state_dir = state_dir
        self.client_key = client_key
        self.worker_key = worker_key
        self.client_key_file = client_key_file
        self.worker_key_file = worker_key_file
        self.tls = tls
        self.heartbeat = heartbeat
        self.keep = keep
        self.debug = debug          # tracebacks in the log ($GRID_DEBUG)
        self.max_jobs = max_jobs    # session jobs one client may have at the hub
        self.stall_timeout = stall_timeout  # a client reading nothing this long loses its jobs


class Conn:
    __slots__ = ("sock", "fd", "peer", "role", "reader", "out", "nonce", "closing",
                 "born", "last_rx", "pinged", "slots", "jobs", "blocked", "paused",
                 "ackq", "feeders", "tls_hs", "events", "name", "tls", "held",
                 "tls_hs_started", "sent", "sent_seen", "sent_since", "noted",
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
        self.born = self.last_rx = self.sent_since = time.monotonic()
        self.sent = self.sent_seen = 0  # bytes sent, and as of the last tick
        self.pinged = False
        self.slots = None           # workers: sched.Slots
        self.jobs = None            # clients: cid -> sched.Job
        self.blocked = set()        # conns paused until our buffer drains
        self.paused = False
        self.ackq = set()           # jobs whose relayed output awaits an ACK
        self.feeders = []           # generators refilling out (results)
        self.tls_hs = tls           # a TLS handshake is still to come
        self.tls_hs_started = False  # ... and has begun (the socket is wrapped)
        self.tls = tls
        self.events = 0
        self.name = peer
        self.held = 0               # input bytes held for queued jobs
        self.blocked_by = 0         # write buffers this conn waits on
        self.noted = set()          # requirement sets it was told no worker has


class Hub(hubjobs.Jobs, hubdurable.Durable, hubnames.Names):
    """The loop and the connections; the jobs' side lives in the mixins."""

    def __init__(self, opts):
        self.opts = opts
        self.sel = selectors.DefaultSelector()
        self.sched = sched.Scheduler()
        self.listeners = []
        self.conns = {}             # fd -> Conn
        self.rbuf = bytearray(RECV)  # every plain read lands here first
        self.rmv = memoryview(self.rbuf)
        self.dirty = set()          # conns with bytes to flush
        self.ack_conns = set()
        self.busy = set()           # worker conns running jobs
        self.unauth = set()
        self.resumed = set()        # unpaused conns with messages buffered
        self.next_hid = 1
        self.durable = {}           # did -> Job (queued or running)
        self.names = {}             # announced name -> (conn, address)
        self.lookups = {}           # name -> conns waiting for it
        self.after_commit = []      # (conn, done, failed) once the journal commits or cannot
        self.unstored = []          # durable jobs whose result the journal could not take yet
        self.next_store = 0.0       # when to try the journal again after a failure
        self.next_tick = 0.0        # heartbeats, handshake and stall timeouts
        self.ticked = 0.0           # when they last ran
        self.reqs_waiting = set()   # requirement sets of jobs queued with no free match
        self.next_note = 0.0        # when to tell clients of jobs no worker can take
        self.journal = None
        self.journal_problem = None  # the last journal failure said, or None
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
                "ANNOUNCE": self.on_announce, "LOOKUP": self.on_lookup,
                "RESULTS": self.on_results,
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
            if not self.journal.writable:
                self.journal_problem = f"journal {self.journal.problem}"
                log(f"{self.journal_problem}: durable jobs are refused (ERR 75) and stored "
                    f"results served until it can write again")
            for row in self.journal.queued():
                did, command, argv, reqs, retries, timeout, tries = row
                job = self._new_job(command, bool(argv), False, journal.decode_reqs(reqs),
                                    retries, timeout)
                job.did = did
                job.tries = 0       # a hub restart is not the job's failure
                self.durable[did] = job
                self.sched.submit(job)
            if self.durable:
                n = len(self.durable)
                log(f"journal: {n} unfinished durable job{'' if n == 1 else 's'} requeued")
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
                        try:
                            self.on_event(obj, mask)
                        except Exception as e:  # noqa: BLE001 - costs that peer only
                            self.fault(obj, e)
                    elif kind == "accept":
                        self.on_accept(obj, extra)
                    else:
                        self.on_signal(obj)
                try:
                    self.turn()
                except Exception as e:  # noqa: BLE001 - the daemon outlives its bugs
                    self.report(None, e)
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
        """End of a loop turn: timers, commit, answer, flush, acknowledge."""
        now = time.monotonic()
        if (self.busy or self.unauth) and now >= self.next_tick:
            self.next_tick = now + min(1.0, self.opts.heartbeat / 2)
            self.tick(now)
        if self.reqs_waiting and now >= self.next_note:
            self.next_note = now + NOTE_AFTER
            self.note_unmatched(now)
        if self.journal is not None:
            self.journal_turn(now)
        self.flush_all()
        while self.resumed:
            conn = self.resumed.pop()
            self.guard(conn, self.process, conn)
            self.flush_all()
        if self.ack_conns:
            for conn in list(self.ack_conns):
                if len(conn.out) < LOW:
                    self.ack_conns.discard(conn)
                    for job in conn.ackq:
                        self.ack(job)
                    conn.ackq.clear()
            self.flush_all()

    def journal_turn(self, now):
        """Commit this turn's journal writes, then tell whoever waited; on
        a failure, refuse what was not stored and retry results later."""
        j = self.journal
        if (not j.writable or self.unstored) and now >= self.next_store:
            self.next_store = now + STORE_RETRY
            if j.retry_write():
                if self.journal_problem:
                    log("journal: writing again")
                    self.journal_problem = None
                todo, self.unstored = self.unstored, []
                for job in todo:
                    self.store_result(job)
        if now >= self.next_expire and j.writable:
            self.next_expire = now + EXPIRE_EVERY
            try:
                n = j.expire(time.time() - self.opts.keep)
            except journal.JournalError as e:
                self.journal_failed(e)
                n = 0
            if n:
                log(f"journal: {n} uncollected result{'' if n == 1 else 's'} expired")
        ok = True
        if j.in_tx:
            try:
                j.commit()
            except journal.JournalError as e:
                self.journal_failed(e)
        if j.take_rolled_back():
            ok = False              # nothing promised this turn was stored
        if self.after_commit:
            todo, self.after_commit = self.after_commit, []
            for conn, done, failed in todo:
                self.guard(conn, done if ok else failed)

    def journal_failed(self, exc):
        """The journal could not write: say so once, and try it again in a
        while (a retry already planned stays planned: refusals while the
        disk is full must not keep pushing it back)."""
        if self.journal_problem != str(exc):
            self.journal_problem = str(exc)
            log(f"{exc}: new durable jobs are refused (ERR 75) until it can write again")
        now = time.monotonic()
        if self.next_store <= now:
            self.next_store = now + STORE_RETRY

    def _timeout(self):
        if self.after_commit or (self.journal is not None and self.journal.in_tx) \
                or self.resumed:
            return 0                # work left over from this turn
        t = None
        now = time.monotonic()
        if self.busy or self.unauth:
            t = max(0.0, self.next_tick - now)
        if self.reqs_waiting:
            n = max(0.0, self.next_note - now)
            t = n if t is None else min(t, n)
        if self.journal is not None:
            e = max(0.0, self.next_expire - now)
            if self.unstored or not self.journal.writable:
                e = min(e, max(0.0, self.next_store - now))
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
        # A client stalls while it has bytes waiting and none leave: the
        # count of bytes sent is compared tick by tick (cheaper than a
        # clock read per send).
        stall = self.opts.stall_timeout
        resumed = now - self.ticked > 2.0    # the ticks paused while nothing ran
        self.ticked = now
        for conn in [c for c in self.conns.values() if c.role == "client"]:
            if not conn.out or conn.sent != conn.sent_seen or resumed:
                conn.sent_seen = conn.sent
                conn.sent_since = now
            elif now - conn.sent_since > stall and conn.jobs:
                self.stalled(conn, now - conn.sent_since)
        for conn in list(self.unauth):
            if now - conn.born > HANDSHAKE_TIMEOUT:
                self.send(conn, wire.error(wire.E_PROTOCOL, "no HELLO in time"))
                self.flush(conn)
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
                o.client_key = keys.read_key(o.client_key_file)
            if o.worker_key_file:
                o.worker_key = keys.read_key(o.worker_key_file)
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
            # A TLS port first sniffs the peer's first byte (see sniff).
            tls = self.opts.tls is not None and sock.family != socket.AF_UNIX
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
            if not conn.tls_hs_started:
                self.sniff(conn)
            else:
                self.tls_handshake(conn)
            return
        if mask & selectors.EVENT_WRITE:
            self.flush(conn)
        if mask & selectors.EVENT_READ and not conn.paused:
            self.on_readable(conn)

    def sniff(self, conn):
        """On a TLS port, a plain-text peer (the usual mistake: no
        GRID_TLS_CA) is told so at once in plain text instead of waiting
        for a handshake that never comes.  Our plain clients open with a
        blank line; a TLS ClientHello opens with the record type 0x16."""
        try:
            first = conn.sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            first = b""
        if not first:
            self.close(conn, quiet=True)
            return
        if first != b"\x16":
            conn.sock.setblocking(True)
            conn.sock.settimeout(1.0)
            try:
                conn.sock.sendall(wire.error(wire.E_PROTOCOL, "this hub speaks TLS: connect "
                                             "with TLS (GRID_TLS_CA or --tls-ca)"))
            except OSError:
                pass
            log(f"{conn.peer}: plain text on a TLS port: refused")
            self.close(conn, quiet=True)
            return
        conn.sock = self.opts.tls.wrap_socket(conn.sock, server_side=True,
                                              do_handshake_on_connect=False)
        conn.tls_hs_started = True
        self.tls_handshake(conn)

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
        """What conn has sent, or None for nothing yet; empty at its end.
        Plain sockets read into one buffer kept for all: a fresh 256 KiB
        bytes per read costs an mmap and a munmap."""
        try:
            if not conn.tls:
                return self.rmv[:conn.sock.recv_into(self.rbuf)]
            data = conn.sock.recv(RECV)
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
                self.send(conn, e.reply())
                if e.fatal:
                    self.flush(conn)
                    self.close(conn)
                    return
                continue
            self.dispatch(conn, msg)
        if conn.role is None and not conn.closing and conn.reader.pending() > wire.MAX_HEADER:
            # Before HELLO nobody may make us hold a body of 16 MiB.
            self.send(conn, wire.error(wire.E_PROTOCOL, "say HELLO first"))
            self.flush(conn)
            self.close(conn)

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
            self.send(conn, e.reply())

    def send(self, conn, data):
        if conn.closing:
            return
        conn.out += data
        self.dirty.add(conn)

    def flush_all(self):
        while self.dirty:
            conn = self.dirty.pop()
            try:
                self.flush(conn)
            except Exception as e:  # noqa: BLE001 - costs that peer only
                self.fault(conn, e)

    # -- one peer's failure is that peer's ------------------------------------

    def guard(self, conn, fn, *args):
        """fn(*args) on conn's behalf: an exception costs conn (ERR 70,
        closed, its jobs ended as if it vanished), never the hub."""
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - CPython socketserver's handle_error
            self.fault(conn, e)

    def fault(self, conn, exc):
        self.report(conn, exc)
        if conn is None or conn.closing:
            return
        try:
            conn.out += wire.error(wire.E_SOFTWARE, "internal error in the hub while serving "
                                   "this connection; it is closed")
            self.flush(conn)
        except Exception:  # noqa: BLE001
            pass
        try:
            self.close(conn)
        except Exception as e:  # noqa: BLE001
            self.report(conn, e)
            self.forget_conn(conn)

    def report(self, conn, exc):
        who = f"{conn.name} ({conn.role or 'no role yet'})" if conn is not None else "hub"
        log(f"{who}: internal error: {type(exc).__name__}: {exc}")
        if self.opts.debug:
            import traceback
            traceback.print_exception(exc)

    def forget_conn(self, conn):
        """Last resort when close() itself failed: drop every reference."""
        conn.closing = True
        for table in (self.dirty, self.ack_conns, self.unauth, self.busy, self.resumed):
            table.discard(conn)
        self.conns.pop(conn.fd, None)
        try:
            self.sel.unregister(conn.fd)
        except (KeyError, ValueError, OSError):
            pass
        try:
            conn.sock.close()
        except OSError:
            pass

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
            conn.sent += n
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
            if self.may_resume(other):
                self.resume(other)
        conn.blocked.clear()

    def may_resume(self, conn):
        """A paused client is read again once nothing holds it back: no
        worker buffer it filled, its held input and its session jobs well
        under their limits (hysteresis: half and three quarters)."""
        return (not conn.blocked_by and conn.held <= HELD_MAX // 2
                and (conn.jobs is None or len(conn.jobs) <= self.opts.max_jobs * 3 // 4))

    def hold_back(self, conn):
        """Stop reading a client until may_resume says otherwise."""
        if not conn.paused:
            conn.paused = True
            self._want(conn, conn.events & ~selectors.EVENT_READ)

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
            self.names_gone(conn)

    # -- handshake ------------------------------------------------------------

    def on_hello(self, conn, msg):
        try:
            role, nonce = wire.check_hello(msg, roles=("client", "worker"))
        except wire.WireError as e:
            self.send(conn, e.reply())
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


def default_state_dir(env):
    base = env.get("XDG_STATE_HOME")
    if not base or not os.path.isabs(base):
        base = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "gridd")
