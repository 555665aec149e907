"""gridd hub: the server owns the event loop and the connection table, and
composes the services that give the protocol's verbs a meaning — sessions
(workers and session jobs), durable (gridsub and the journal), control
(gridd ctl), names (ANNOUNCE, LOOKUP), streams (gridcat's topics and
queues, and the events), rooms (gridcat join), peers (workers the hub dials
or starts over ssh), upstream (this hub as a worker of another) and, with
--http, http (/metrics, the status page).

The server accepts, sniffs TLS, handshakes (HELLO, keys), reads, and hands
each whole message to the handler its service registered for the verb and
the peer's role; it writes each connection's buffer once per loop turn.
An exception while serving one peer costs that peer (ERR 70, closed, its
jobs ended as if it vanished), never the daemon.

A service has `verbs = {VERB: (bound method, roles)}`, `opened(conn)` (after
a HELLO that succeeded) and `closed(conn, quiet)` (when a connection that
said HELLO closes), and reaches the server only through this interface:

    send(conn, data)           queue bytes for conn; written at the end of the turn
    close(conn)                close conn now (each service hears closed())
    pause(conn, because)       read conn no further until because's buffer drains
    hold(conn), release(conn)  read conn no further until released
    when_low(conn, fn)         fn(conn) once conn's write buffer is under LOW
    feed(conn, gen), refill(conn)  refill conn's buffer from gen's messages as it
                               drains (gen yields None when it has nothing yet)
    before_flush(fn)           fn() once at the end of this turn, before the
                               writes go out (the journal's one commit a turn)
    guard(conn, fn)            fn() on conn's behalf: an exception costs conn
    call_later(delay, fn, *a)  a cancellable timer on the monotonic clock; an
                               exception from fn is logged, the hub goes on
    start_drain(why), draining, addresses, log(text)
    event(kind, **fields)      a line on the events topic (streams); job.* events
                               only while events_on, which streams keeps true
                               while someone follows that topic
    adopt(sock, peer, service, how, data, tls)  serve a connection the service
                               made (peers: it dialled or started a worker;
                               tls: its client handshake is to be run); the
                               peer's messages go to service.greet(conn, msg)
                               until the service calls joined(conn, role)

and of a conn (gridtools.hub.conn.Conn) reads peer, name, role, closing,
len(out), sent and last_rx.  The loop is gridtools.io.loop.Loop unless
another with its (asyncio's) method names is given.
"""

import gc
import os
import signal
import socket
import sys

from gridtools.hub import sched
from gridtools.hub.conn import RECV, Conn
from gridtools.hub.control import Control
from gridtools.hub.durable import Durable
from gridtools.hub.http import Http
from gridtools.hub.names import Names
from gridtools.hub.peers import Peers
from gridtools.hub.rooms import Rooms
from gridtools.hub.sessions import Sessions
from gridtools.hub.streams import Streams
from gridtools.hub.upstream import Upstream
from gridtools.io import net
from gridtools.io.loop import Loop
from gridtools.proto import errors, keys, wire
from gridtools.hub.sched import LOW

HANDSHAKE_TIMEOUT = 10.0
DRAIN_TIMEOUT = 30.0
MAX_JOBS = 10000            # session jobs (queued or running) per client before it is paused
STALL_TIMEOUT = 60.0        # seconds a client may read nothing while its jobs hold slots
BOTH = ("client", "worker")


def log(text):
    sys.stderr.write(f"gridd hub: {text}\n")
    sys.stderr.flush()


class Options:
    """What the hub needs from its command line."""

    def __init__(self, listen=(), state_dir=None, client_key=None, worker_key=None,
                 client_key_file=None, worker_key_file=None, tls=None, heartbeat=10.0,
                 keep=7 * 86400.0, debug=False, max_jobs=MAX_JOBS,
                 stall_timeout=STALL_TIMEOUT, peers=(), http=None, http_token=None, upstream=None,
                 upstream_key=None, peer_file=None, file_peers=(), peer_tls=None,
                 upstream_tls=None):
        self.listen = list(listen)  # Addresses to bind, or sockets systemd passed
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
        self.peers = list(peers)    # workers the hub reaches itself (peers.Spec)
        self.peer_file = peer_file  # --peer-file, read again on SIGHUP
        self.file_peers = list(file_peers)  # ... the addresses it held at start
        self.peer_tls = peer_tls    # a client TLS context for dialled workers, or None
        self.upstream_tls = upstream_tls  # ... for the hub above
        self.http = http            # --http: the Address of /metrics and /status.json
        self.http_token = http_token  # --http-token: what every HTTP request must carry
        self.upstream = upstream    # --upstream: the hub we are a worker of
        self.upstream_key = upstream_key


class Hub:
    """The loop, the connections, and the services composed on them."""

    log = staticmethod(log)

    def __init__(self, opts, loop=None):
        self.opts = opts
        self.own_loop = loop is None
        self.loop = Loop() if loop is None else loop
        self.listeners = []
        self.conns = {}             # fd -> Conn
        self.rbuf = bytearray(RECV)  # every plain read lands here first
        self.rmv = memoryview(self.rbuf)
        self.dirty = set()          # conns with bytes to flush
        self.resumed = set()        # unpaused conns with messages buffered
        self.received = 0           # bytes read from peers (for /metrics)
        self.sent_closed = 0        # bytes sent to peers now closed (live ones: conn.sent)
        self.hooks = []             # before_flush functions of this turn
        self.flush_planned = False  # end_turn is queued for this turn
        self.draining = False
        self.stopped = False
        self.addresses = []
        self.sched = sched.Scheduler()
        self.sessions = Sessions(self, self.sched, opts)
        self.durable = Durable(self, self.sessions, self.sched, opts)
        self.streams = Streams(self, self.durable, opts)
        # The hub's events: services call event(kind, **fields); the job.*
        # ones, a few a job, only while events_on (someone follows them).
        self.event = self.streams.event
        self.events_on = False
        self.dialled = {}           # conn -> (service, how): connections a service made
        self.peers = Peers(self, opts)
        self.control = Control(self, self.sessions, self.durable, opts)
        self.services = (self.sessions, self.durable, self.control, Names(self),
                         self.peers, self.streams, Rooms(self, opts),
                         Upstream(self, self.sessions, opts))
        self.http = None
        if opts.http is not None:
            self.http = Http(self, self.control, self.streams, self.sessions, self.durable,
                             opts.http, opts.http_token)
            self.services += (self.http,)
        # role -> verb -> handler: None is a peer that has not said HELLO.
        # "upstream": the hub above us, when we are its worker (upstream.py).
        self.handlers = {None: {"HELLO": self.on_hello}, "client": {}, "worker": {},
                         "upstream": {}}
        own = {"PING": (self.on_ping, BOTH), "PONG": (self.on_pong, BOTH),
               "QUIT": (self.on_quit, BOTH), "ERR": (self.on_err, BOTH)}
        for verbs in (own, *(s.verbs for s in self.services)):
            for verb, (fn, roles) in verbs.items():
                for role in roles:
                    if verb in self.handlers[role]:
                        raise ValueError(f"{verb} is registered twice for {role}s")
                    self.handlers[role][verb] = fn

    # -- start, run, stop ---------------------------------------------------------

    def open(self):
        """Journal, then listeners; returns the addresses bound."""
        if self.opts.state_dir:
            self.durable.open()
            self.streams.open()
        for addr in self.opts.listen:
            if isinstance(addr, socket.socket):     # passed by systemd: not ours to unlink
                s, real = addr, net.socket_address(addr)
                s.setblocking(False)
                self.listeners.append((s, None))
            else:
                try:
                    s = net.listen(addr)
                except OSError as e:
                    raise errors.UnavailableError(f"cannot listen on {addr}: {e.strerror}")
                real = net.bound_address(s, addr)
                self.listeners.append((s, real))
            self.loop.add_reader(s.fileno(), self.on_accept, s, real)
            self.addresses.append(real)
            log(f"listening on {real}" + (" (from systemd)" if s is addr else ""))
        if self.http is not None:
            try:
                log(f"http on {self.http.start()}")
            except OSError as e:
                raise errors.UnavailableError(f"cannot listen on {self.opts.http}: "
                                              f"{e.strerror}")
        return self.addresses

    def serve(self):
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(signum, self._run, self.start_drain,
                                         (f"signal {signal.Signals(signum).name}",))
        self.loop.add_signal_handler(signal.SIGHUP, self._run, self.reload, ())
        # A job's objects die by reference counting; the cycle collector
        # would scan the jobs in flight every 700 allocations (0.5-0.7 us a
        # job with 4,000 in flight).  What start-up made is frozen out of
        # its passes, and it runs every 10,000.
        threshold = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(10000, 10, 10)
        try:
            while not self.stopped:
                try:
                    self.loop.run_forever()
                except Exception as e:  # noqa: BLE001 - the daemon outlives its bugs
                    self.report(None, e)
        finally:
            self.end_turn()
            self.peers.close()
            if self.http is not None:
                self.http.stop()
            for conn in list(self.conns.values()):
                self.close(conn, quiet=True)
            for s, addr in self.listeners:
                self._close_listener(s, addr)
            self.durable.close()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                self.loop.remove_signal_handler(signum)
            self.close_loop()
            gc.set_threshold(*threshold)
            gc.unfreeze()
        log("stopped")
        return 0

    def close_loop(self):
        if self.own_loop:
            self.loop.close()

    def stop(self):
        self.stopped = True
        self.loop.stop()

    def start_drain(self, why):
        if self.draining:
            return
        log(f"{why}: draining (no new jobs; running ones finish, {DRAIN_TIMEOUT:.0f}s at most)")
        self.draining = True
        self.loop.call_later(DRAIN_TIMEOUT, self.stop)
        for s, addr in self.listeners:
            self._close_listener(s, addr)
        self.listeners = []
        self.sessions.changed()     # a hub above is offered no more slots (upstream.py)
        self._plan()                # end_turn sees whether it is idle already

    def _close_listener(self, s, addr):
        self.loop.remove_reader(s.fileno())
        s.close()
        if addr is not None and addr.family == socket.AF_UNIX:
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
        self.peers.reload()

    # -- timers and the end of a turn ---------------------------------------------------

    def call_later(self, delay, fn, *args):
        return self.loop.call_later(delay, self._run, fn, args)

    def _run(self, fn, args):
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - the daemon outlives its bugs
            self.report(None, e)

    def _plan(self):
        if not self.flush_planned:
            self.flush_planned = True
            self.loop.call_soon(self.end_turn)

    def before_flush(self, fn):
        self.hooks.append(fn)
        self._plan()

    def end_turn(self):
        """Once a turn, after its reads and timers: the services' hooks
        (the journal commits), then every write, then the messages of
        clients read again; until nothing is left to do."""
        try:
            while True:
                if self.hooks:
                    hooks, self.hooks = self.hooks, []
                    for fn in hooks:
                        self._run(fn, ())
                self.flush_all()
                if self.resumed:
                    conn = self.resumed.pop()
                    self.guard(conn, self.process, conn)
                elif not self.hooks and not self.dirty:
                    break
        finally:
            self.flush_planned = False
        if self.draining and self.sessions.idle():
            self.stop()

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
            conn.hs_timer = self.loop.call_later(HANDSHAKE_TIMEOUT, self.guard, conn,
                                                 self.no_hello, conn)
            self._want(conn, True, False)
            if not tls:
                self.greet(conn)

    def adopt(self, sock, peer, service, how, data=b"", tls=False):
        """A connection a service made (it dialled a worker, or started one
        over ssh), served as any other; data: bytes already read from it;
        tls: sock is wrapped (net.wrap_client) and its handshake comes
        first.  The peer speaks first there: its messages go to
        service.greet(conn, msg) until the service calls joined();
        service.closed() hears of the connection's end even before then.
        Returns the Conn."""
        sock.setblocking(False)
        conn = Conn(sock, peer, tls)
        conn.tls_hs_started = tls
        self.conns[conn.fd] = conn
        self.dialled[conn] = (service, how)
        conn.hs_timer = self.loop.call_later(HANDSHAKE_TIMEOUT, self.guard, conn,
                                             self.no_hello, conn)
        if conn.tls:
            self.tls_handshake(conn)
        else:
            self._want(conn, True, False)
        if data:
            conn.reader.feed(data)
            self.resumed.add(conn)
            self._plan()
        return conn

    def direction(self, conn):
        """How a connection came: "in" (it connected), "upstream" (a hub
        below that connected: gridd hub --upstream), or the service's word."""
        d = self.dialled.get(conn)
        if d is None:
            return "upstream" if conn.hub_below else "in"
        return d[1]

    def no_hello(self, conn):
        self.send(conn, wire.error(wire.E_PROTOCOL, "no HELLO in time"))
        self.flush(conn)
        self.close(conn)

    def greet(self, conn):
        conn.nonce = wire.new_nonce()
        o = self.opts
        needs = ",".join(r for r, k in (("client", o.client_key), ("worker", o.worker_key)) if k)
        self.send(conn, wire.hello("hub", conn.nonce,
                                   auth=wire.AUTH if needs else "none", keys=needs or None))

    def on_read(self, conn):
        try:
            if conn.closing:
                return
            if conn.tls_hs:
                if not conn.tls_hs_started:
                    self.sniff(conn)
                else:
                    self.tls_handshake(conn)
            elif not conn.paused:
                self.on_readable(conn)
        except Exception as e:  # noqa: BLE001 - costs that peer only
            self.fault(conn, e)

    def on_write(self, conn):
        try:
            if conn.closing:
                return
            if conn.tls_hs:
                self.tls_handshake(conn)
            else:
                self.flush(conn)
        except Exception as e:  # noqa: BLE001 - costs that peer only
            self.fault(conn, e)

    def sniff(self, conn):
        got = conn.sniff(self.opts.tls)
        if got == "tls":
            self.tls_handshake(conn)
        elif got != "wait":
            if got == "refused":
                log(f"{conn.peer}: plain text on a TLS port: refused")
            self.close(conn, quiet=True)

    def tls_handshake(self, conn):
        step = conn.handshake()
        if step in ("read", "write"):
            self._want(conn, step == "read", step == "write")
        elif step == "done":
            self._want(conn, True, False)
            if conn not in self.dialled:    # one we called speaks first
                self.greet(conn)
        else:
            log(f"{conn.peer}: TLS handshake {step}")
            self.close(conn, quiet=True)

    def _want(self, conn, read, write):
        """Watch conn for reading and writing (a loop call only on a change)."""
        if conn.closing:
            return
        if read != conn.reading:
            conn.reading = read
            if read:
                self.loop.add_reader(conn.fd, self.on_read, conn)
            else:
                self.loop.remove_reader(conn.fd)
        if write != conn.writing:
            conn.writing = write
            if write:
                self.loop.add_writer(conn.fd, self.on_write, conn)
            else:
                self.loop.remove_writer(conn.fd)

    def on_readable(self, conn):
        data = conn.recv(self.rbuf, self.rmv)
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
        conn.last_rx = self.loop.time()
        self.received += len(data)
        conn.reader.feed(data)
        self.process(conn)

    def process(self, conn):
        """Handle the whole messages in conn's read buffer (until paused)."""
        reader = conn.reader
        handlers = self.handlers
        while not conn.closing and not conn.paused:
            try:
                msg = reader.next()
                if msg is None:
                    break
            except wire.WireError as e:
                self.send(conn, e.reply())
                if e.fatal:
                    self.flush(conn)
                    self.close(conn)
                    return
                continue
            # dispatch(), its common case inline: this runs per message.
            handler = handlers[conn.role].get(msg.verb)
            if handler is None:
                self.dispatch(conn, msg)
                continue
            try:
                handler(conn, msg)
            except wire.WireError as e:
                self.send(conn, e.reply())
        if conn.role is None and not conn.closing and conn.reader.pending() > wire.MAX_HEADER:
            # Before HELLO nobody may make us hold a body of 16 MiB.
            self.send(conn, wire.error(wire.E_PROTOCOL, "say HELLO first"))
            self.flush(conn)
            self.close(conn)

    def dispatch(self, conn, msg):
        handler = self.handlers[conn.role].get(msg.verb)
        if handler is None:
            if conn.role is None:
                made = self.dialled.get(conn)
                if made is not None:
                    made[0].greet(conn, msg)    # it says what it will; the service judges
                    return
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

    # -- writing, pausing ---------------------------------------------------------

    def send(self, conn, data):
        if conn.closing:
            return
        conn.out += data
        self.dirty.add(conn)
        if not self.flush_planned:
            self.flush_planned = True
            self.loop.call_soon(self.end_turn)

    def refill(self, conn):
        if not conn.closing:
            self.dirty.add(conn)
            self._plan()

    def feed(self, conn, gen):
        conn.feeders.append(gen)
        self.refill(conn)

    def when_low(self, conn, fn):
        conn.low = fn

    def flush_all(self):
        while self.dirty:
            conn = self.dirty.pop()
            try:
                self.flush(conn)
            except Exception as e:  # noqa: BLE001 - costs that peer only
                self.fault(conn, e)

    def flush(self, conn):
        if conn.closing:
            return
        if not conn.write():
            self.close(conn)
            return
        out = conn.out
        if conn.feeders and len(out) < LOW:
            before = len(out)
            conn.pump(sched.HIGH)
            if len(out) > before and not conn.closing:
                self.dirty.add(conn)        # write what the feeders added
        if conn.reading == conn.paused or conn.writing != bool(out):
            self._want(conn, not conn.paused, bool(out))    # a loop call only on a change
        if len(out) < LOW:
            if conn.blocked:
                self.unblock(conn)
            if conn.low is not None:
                fn, conn.low = conn.low, None
                fn(conn)

    def pause(self, conn, because):
        """Stop reading conn until because's write buffer drains."""
        if conn not in because.blocked:
            because.blocked.add(conn)
            conn.blocked_by += 1
        self._stop_reading(conn)

    def hold(self, conn):
        """Stop reading conn until release(conn)."""
        conn.holds = True
        self._stop_reading(conn)

    def release(self, conn):
        conn.holds = False
        if not conn.blocked_by:
            self.resume(conn)

    def _stop_reading(self, conn):
        if not conn.paused:
            conn.paused = True
            self._want(conn, False, conn.writing)

    def unblock(self, conn):
        for other in conn.blocked:
            other.blocked_by -= 1
            if not other.blocked_by and not other.holds:
                self.resume(other)
        conn.blocked.clear()

    def resume(self, conn):
        if conn.paused and not conn.closing:
            conn.paused = False
            self._want(conn, True, conn.writing)
            # Whole messages may already wait in its read buffer.
            self.resumed.add(conn)
            self._plan()

    def close(self, conn, quiet=False):
        if conn.closing:
            return
        self.sent_closed += conn.sent
        self._want(conn, False, False)
        conn.closing = True
        if conn.hs_timer is not None:
            conn.hs_timer.cancel()
        self.dirty.discard(conn)
        self.resumed.discard(conn)
        self.conns.pop(conn.fd, None)
        try:
            conn.sock.close()
        except OSError:
            pass
        self.unblock(conn)
        made = self.dialled.pop(conn, None)
        if conn.role is not None:
            for service in self.services:
                service.closed(conn, quiet)
        elif made is not None:
            made[0].closed(conn, quiet)
        if self.draining:
            self._plan()            # the last worker gone may leave the hub idle

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
        self.dirty.discard(conn)
        self.resumed.discard(conn)
        self.conns.pop(conn.fd, None)
        for remove in (self.loop.remove_reader, self.loop.remove_writer):
            try:
                remove(conn.fd)
            except (KeyError, ValueError, OSError):
                pass
        try:
            conn.sock.close()
        except OSError:
            pass

    # -- the handshake and the connection's own verbs --------------------------------

    def on_hello(self, conn, msg):
        made = self.dialled.get(conn)
        if made is not None:
            made[0].greet(conn, msg)        # we called: it greets us (peers.py)
            return
        try:
            role, nonce = wire.check_hello(msg, roles=("client", "worker"))
            below = msg.get("hub")          # a hub below (upstream.py) says hub=1
            if below is not None and (below != "1" or role != "worker"):
                raise wire.WireError("HELLO: hub= must be 1, from a worker", wire.E_USAGE,
                                     field="hub", got=below)
        except wire.WireError as e:
            self.send(conn, e.reply())
            self.flush(conn)
            self.close(conn)
            return
        conn.hub_below = below is not None
        key = self.opts.client_key if role == "client" else self.opts.worker_key
        if key is not None and not wire.check_mac(key, role, conn.nonce, nonce, msg.get("mac")):
            log(f"{conn.peer}: authentication as {role} failed")
            self.send(conn, wire.error(wire.E_NOPERM, f"authentication as {role} failed"))
            self.flush(conn)
            self.close(conn)
            return
        mac = wire.mac(key, "hub", nonce, conn.nonce) if key is not None else None
        self.send(conn, wire.format("WELCOME", wire.VERSION, role="hub", mac=mac,
                                    slots=self.sessions.total_slots()))
        self.joined(conn, role)

    def joined(self, conn, role):
        """The handshake is done: conn is a client's or a worker's."""
        conn.role = role
        conn.hs_timer.cancel()
        conn.hs_timer = None
        for service in self.services:
            service.opened(conn)

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
