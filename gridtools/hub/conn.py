"""One connection at the hub, as the server and its services see it: a
socket, a read buffer (wire.Reader), a write buffer, the flags that say
whether the server reads and writes it now, and its socket-level work
(sniffing a TLS port, the TLS handshake, a read, a write) with no loop."""

import socket
import time

from gridtools.proto import wire

RECV = 1 << 18
SEND = RECV * 4             # at most this much per send() call


class Conn:
    """The server's fields, and two that belong to the sessions service:
    slots (a worker's sched.Slots, once it said READY) and session (a
    client's sessions.Session, once it said HELLO).  A service reads peer,
    name, role, closing, len(out), sent and last_rx; it may set name."""

    __slots__ = ("sock", "fd", "peer", "role", "name", "reader", "out", "nonce", "closing",
                 "last_rx", "sent", "reading", "writing", "paused", "holds", "blocked",
                 "blocked_by", "low", "feeders", "tls", "tls_hs", "tls_hs_started",
                 "hs_timer", "slots", "session", "hub_below")

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
        self.hub_below = False      # a worker that is a hub (its HELLO said hub=1)

    def recv(self, rbuf, rmv):
        """What the peer has sent, or None for nothing yet; empty at its end.
        Plain sockets read into rbuf, one buffer kept for all: a fresh 256
        KiB bytes per read costs an mmap and a munmap."""
        sock = self.sock
        try:
            if not self.tls:
                return rmv[:sock.recv_into(rbuf)]
            data = sock.recv(RECV)
            while sock.pending():
                data += sock.recv(sock.pending())
            return data
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as e:
            if self.tls and e.__class__.__name__ in ("SSLWantReadError", "SSLWantWriteError"):
                return None
            return b""

    def write(self):
        """Send what the socket takes now; False if the socket failed."""
        out = self.out
        while out:
            try:
                n = self.sock.send(out if len(out) <= SEND else out[:SEND])
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if self.tls and e.__class__.__name__ in ("SSLWantReadError",
                                                         "SSLWantWriteError"):
                    break
                return False
            del out[:n]
            self.sent += n
        return True

    def pump(self, high):
        """Refill out from the feeders, up to high bytes."""
        while self.feeders and len(self.out) < high:
            try:
                chunk = next(self.feeders[0])
            except StopIteration:
                self.feeders.pop(0)
                continue
            if chunk is None:
                break               # following a job that has more to say
            self.out += chunk

    def sniff(self, context):
        """On a TLS port, a plain-text peer (the usual mistake: no
        GRID_TLS_CA) is told so at once in plain text instead of waiting
        for a handshake that never comes.  Our plain clients open with a
        blank line; a TLS ClientHello opens with the record type 0x16.
        Returns "wait" (nothing yet), "closed", "refused" (told so), or
        "tls" (the socket is wrapped: the handshake may begin)."""
        try:
            first = self.sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return "wait"
        except OSError:
            first = b""
        if not first:
            return "closed"
        if first != b"\x16":
            self.sock.setblocking(True)
            self.sock.settimeout(1.0)
            try:
                self.sock.sendall(wire.error(wire.E_PROTOCOL, "this hub speaks TLS: connect "
                                             "with TLS (GRID_TLS_CA or --tls-ca)"))
            except OSError:
                pass
            return "refused"
        self.sock = context.wrap_socket(self.sock, server_side=True,
                                        do_handshake_on_connect=False)
        self.tls_hs_started = True
        return "tls"

    def handshake(self):
        """One step of the TLS handshake: "read" or "write" (what it waits
        for), "done", or why it failed."""
        import ssl
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            return "read"
        except ssl.SSLWantWriteError:
            return "write"
        except (ssl.SSLError, OSError) as e:
            return f"failed: {getattr(e, 'reason', None) or e}"
        self.tls_hs = False
        return "done"
