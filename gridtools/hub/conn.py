"""One connection at the hub, as the server and its services see it: a
socket, a read buffer (wire.Reader), a write buffer, and the flags that say
whether the server reads and writes it now."""

import time

from gridtools.proto import wire


class Conn:
    """The server's fields, and two that belong to the sessions service:
    slots (a worker's sched.Slots, once it said READY) and session (a
    client's sessions.Session, once it said HELLO).  A service reads peer,
    name, role, closing, len(out), sent and last_rx; it may set name."""

    __slots__ = ("sock", "fd", "peer", "role", "name", "reader", "out", "nonce", "closing",
                 "last_rx", "sent", "reading", "writing", "paused", "holds", "blocked",
                 "blocked_by", "low", "feeders", "tls", "tls_hs", "tls_hs_started",
                 "hs_timer", "slots", "session")

    def __init__(self, sock, peer, tls=False):
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.name = peer
        self.role = None
        self.reader = wire.Reader()
        self.out = bytearray()
        self.nonce = None
        self.closing = False
        self.last_rx = time.monotonic()
        self.sent = 0               # bytes sent (a stalled reader's count stops)
        self.reading = False        # a reader is registered with the loop
        self.writing = False        # ... and a writer
        self.paused = False         # not read now: see holds and blocked_by
        self.holds = False          # a service holds its reading back (hold/release)
        self.blocked = set()        # conns paused until our buffer drains
        self.blocked_by = 0         # write buffers this conn waits on
        self.low = None             # fn(conn) once our buffer is low (when_low)
        self.feeders = []           # generators refilling out (durable results)
        self.tls = tls
        self.tls_hs = tls           # a TLS handshake is still to come
        self.tls_hs_started = False  # ... and has begun (the socket is wrapped)
        self.hs_timer = None        # closes it if no HELLO comes in time
        self.slots = None
        self.session = None
