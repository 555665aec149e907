"""The hub's upstream service (`gridd hub --upstream HUB`): this hub is a
worker of the hub above.  It dials it (with TLS as its client given
--upstream-tls-ca), answers its HELLO as a worker (wire.connect_as, with
--upstream-key or $GRID_KEY), and offers READY with
the sum of its own workers' slots and the tags all of them share; READY is
sent again whenever that offer changes (a worker joined, left or is
draining; none left offers slots=0).

Above, the connection is a worker's (its HELLO says hub=1, so `gridd ctl
workers` there shows it came "upstream"); here it is the role "upstream", a
session as a client's is (sessions.Session with relay set): the hub
above's RUN, IN and KILL are the sessions service's (its jobs queue and
run on our workers like a client's session jobs, and OUT, ACK and DONE go
up in the worker protocol's words); CANCEL and BYE are answered here, and
its ACK passes down to the worker running that job, so output is
acknowledged end to end and the worker's window bounds every hub on the
way.  When the connection drops, the sessions service cancels what it
sent (as for a client gone), and the hub above sees a worker vanish (its
jobs requeued or lost per their retries); the hub is dialled again after
a delay that doubles as peers.py's does.  After BYE (we were drained) it
is not.
"""

import os
import socket
import time

from gridtools.hub.peers import DIAL_TIMEOUT, FIRST_DELAY, MAX_DELAY, STEADY
from gridtools.io import net
from gridtools.proto import wire

UP = ("upstream",)


class Upstream:
    """One hub above (opts.upstream, an address, or None for none)."""

    def __init__(self, server, sessions, opts):
        self.server = server
        self.sessions = sessions
        self.loop = server.loop
        self.where = getattr(opts, "upstream", None)
        self.key = getattr(opts, "upstream_key", None)
        self.tls = getattr(opts, "upstream_tls", None)  # a client context: --upstream-tls-ca
        self.name = f"{socket.gethostname()}-{os.getpid()}"
        self.conn = None            # the server's connection, once adopted
        self.sock = None            # ours while connecting
        self.timer = None
        self.check = None           # checks the WELCOME above
        self.delay = FIRST_DELAY
        self.up_since = None
        self.offered = None         # (slots, tags) last said in READY
        self.planned = False        # an offer is due at the end of this turn
        self.bye = False
        s = sessions
        self.verbs = {
            "RUN": (s.on_run, UP), "IN": (s.on_in, UP), "KILL": (s.on_kill, UP),
            "ACK": (self.on_ack, UP), "CANCEL": (self.on_cancel, UP),
            "BYE": (self.on_bye, UP), "PING": (self.on_ping, UP),
            "PONG": (self.on_pong, UP), "ERR": (self.on_err, UP),
        }
        if self.where:
            sessions.watchers.append(self.changed)
            server.call_later(0, self.reach)

    def opened(self, conn):
        pass

    def log(self, text):
        self.server.log(f"upstream {self.where}: {text}")

    # -- reaching the hub above -------------------------------------------------------

    def reach(self):
        self.timer = None
        if self.bye or self.server.draining or self.server.stopped:
            return
        try:
            self.sock = net.connect_nowait(net.parse_address(self.where))
        except OSError as e:
            self.retry(f"cannot connect: {e.strerror or e}")
            return
        self.loop.add_writer(self.sock.fileno(), self.guarded, self.connected)
        self.timer = self.server.call_later(DIAL_TIMEOUT, self.dial_timeout)

    def guarded(self, fn):
        """A loop callback: an exception costs this attempt, never the hub."""
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - the daemon outlives its bugs
            self.server.report(None, e)
            if self.sock is not None:
                self.loop.remove_writer(self.sock.fileno())
                self.sock.close()
                self.sock = None
                self.retry("internal error")

    def connected(self):
        sock = self.sock
        if sock is None:
            return
        self.loop.remove_writer(sock.fileno())
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        err = net.connect_error(sock)
        self.sock = None
        if err is not None:
            sock.close()
            self.retry(f"cannot connect: {err.strerror}")
            return
        net.tune(sock)
        wrapped = net.wrap_client(sock, net.parse_address(self.where), self.tls)
        self.conn = self.server.adopt(wrapped, self.where, self, "upstream",
                                      tls=wrapped is not sock)
        if wrapped is sock:
            self.server.send(self.conn, b"\n")    # a TLS hub above says so at once
        self.conn.name = f"upstream {self.where}"

    def dial_timeout(self):
        self.timer = None
        if self.sock is not None:
            self.loop.remove_writer(self.sock.fileno())
            self.sock.close()
            self.sock = None
            self.retry(f"no connection within {DIAL_TIMEOUT:.0f}s")

    def greet(self, conn, msg):
        """The hub above greets us (HELLO), then welcomes us (WELCOME)."""
        if conn is not self.conn:
            return
        try:
            if self.check is None:
                line, self.check = wire.connect_as(msg, "worker", self.key, peer_roles=("hub",),
                                                   hint="--upstream-key, or GRID_KEY", hub="1")
                self.server.send(conn, line)
                return
            self.check(msg)
        except wire.WireError as e:
            self.log(f"handshake: {e}")
            if msg.verb != "ERR":
                self.server.send(conn, e.reply())
            self.server.close(conn)
            return
        self.check = None
        self.up_since = time.monotonic()
        self.offered = None
        self.server.joined(conn, "upstream")
        self.log(f"connected as worker {self.name}")
        self.changed()

    def closed(self, conn, quiet):
        if conn is not self.conn:
            return
        self.conn = None
        self.check = None
        if self.up_since is not None and time.monotonic() - self.up_since >= STEADY:
            self.delay = FIRST_DELAY
        self.up_since = None
        if self.bye:
            self.log("drained by the hub above; not connecting again")
        elif not (self.server.draining or self.server.stopped):
            self.retry("the hub above went away")

    def retry(self, why):
        if self.server.draining or self.server.stopped:
            return
        self.log(f"{why}; again in {self.delay:.1f}s")
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.server.call_later(self.delay, self.reach)
        self.delay = min(self.delay * 2, MAX_DELAY)

    # -- the offer ---------------------------------------------------------------------

    def changed(self):
        """Our workers changed: READY again at the end of this turn, once."""
        if not self.planned and self.conn is not None and self.conn.role == "upstream":
            self.planned = True
            self.server.before_flush(self.offer)

    def offer(self):
        self.planned = False
        conn = self.conn
        if conn is None or conn.closing:
            return
        slots, tags = offer_of(self.sessions.workers)
        if self.server.draining:
            slots = 0
        if (slots, tags) == self.offered:
            return
        self.offered = (slots, tags)
        self.server.send(conn, wire.format("READY", slots=slots, name=self.name,
                                           **{f"tag.{k}": v for k, v in sorted(tags.items())}))

    # -- what the hub above says besides RUN, IN and KILL ----------------------------------

    def job(self, conn, msg):
        return conn.session.jobs.get(msg.ref_arg(0))

    def on_ack(self, conn, msg):
        """n bytes of a job's output left the hub above: its worker may send n more."""
        job = self.job(conn, msg)
        n = msg.int("n", 0)
        if job is not None and job.worker is not None and not job.worker.closing:
            self.server.send(job.worker, wire.format("ACK", job.hid, n=n))

    def on_cancel(self, conn, msg):
        job = self.job(conn, msg)
        if job is None:
            return                  # ended meanwhile: its DONE is on its way up
        if job.worker is not None:
            self.server.send(job.worker, wire.format("CANCEL", job.hid))
        else:
            self.sessions.end_queued(conn, job)

    def on_bye(self, conn, msg):
        self.bye = True
        self.server.close(conn)

    def on_ping(self, conn, msg):
        self.server.send(conn, b"PONG\n")

    def on_pong(self, conn, msg):
        pass

    def on_err(self, conn, msg):
        self.log(f"says: ERR {' '.join(msg.args)}")


def offer_of(workers):
    """(slots, tags) a hub offers above: the slots of its workers that are
    not draining, and the tags every one of them has."""
    slots, tags = 0, None
    for c in workers:
        w = c.slots
        if w.draining:
            continue
        slots += w.slots
        tags = dict(w.tags) if tags is None else {k: v for k, v in tags.items()
                                                    if w.tags.get(k) == v}
    return slots, tags or {}
