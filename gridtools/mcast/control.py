"""gridmcast's TCP connections on the event loop: the control connection
(hub-protocol messages in through the one bounded parser, buffered lines
out) and the non-blocking connect that relay feeds use, so nothing waits
for a peer inside the loop."""

import socket

from gridtools.io import net as ionet
from gridtools.proto import address
from gridtools.proto import wire as proto
from gridtools.mcast import wire


def control_address(host, port):
    """(host, port) as the io.net Address that listen() and connect() take."""
    return address.Address(socket.AF_INET6 if ":" in host else socket.AF_INET, host, port)


def connect_nowait(hostport, what, sndbuf=None):
    """Start a TCP connect to 'HOST:PORT' (a numeric address, as receivers
    announce their relay port) without waiting (io.net.connect_nowait)."""
    host, port = wire.parse_hostport(hostport, what)
    return ionet.connect_nowait(control_address(host, port), sndbuf)


connect_error = ionet.connect_error


class Conn:
    """A non-blocking TCP connection on the loop: bounded input, buffered
    output that a writer callback drains while the kernel will not take it."""

    def __init__(self, loop, sock, name="", reader=None):
        sock.setblocking(False)
        ionet.tune(sock)
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.name = name
        self.reader = reader or proto.Reader()    # may hold what came after the handshake
        self.out = bytearray()
        self.eof = False
        self.writing = False

    def fileno(self):
        return self.fd

    def recv(self, limit=1 << 20):
        """Read what is there into the reader; sets eof on end or reset."""
        try:
            data = self.sock.recv(limit)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.eof = True
            return
        if not data:
            self.eof = True
        self.reader.feed(data)

    def messages(self):
        """The whole messages read so far (blank lines skipped: io.net.connect
        opens with one).  Raises proto.WireError for a line that breaks the
        grammar or its caps, and for a body, which no control line has."""
        out = []
        for msg in self.reader:
            if msg.body is not None:
                raise proto.WireError(f"{msg.verb}: a control line carries no body (bytes=)")
            out.append(msg)
        return out

    def send(self, data):
        """Queue data; what the kernel does not take now goes when it can."""
        self.out += data
        self.flush()
        if self.out and not self.writing and self.sock is not None:
            self.writing = True
            self.loop.add_writer(self.fd, self._on_writable)

    def _on_writable(self):
        self.flush()
        if (not self.out or self.eof) and self.sock is not None:
            self.writing = False
            self.loop.remove_writer(self.fd)

    def flush(self):
        """Write what the kernel takes now; returns False if the peer is gone."""
        if self.sock is None:
            self.out.clear()
            return False
        while self.out:
            try:
                n = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                self.out.clear()
                self.eof = True
                return False
            del self.out[:n]
        return True

    def drain(self, timeout):
        """After the loop: wait up to timeout for the queued output to go."""
        if not self.out or self.sock is None:
            return
        try:
            self.sock.settimeout(timeout)
            self.sock.sendall(self.out)
        except OSError:
            pass
        self.out.clear()

    def close(self):
        """Leave the loop and close (the fd is unregistered first, so a
        number the kernel hands out again cannot inherit our callbacks)."""
        if self.sock is None:
            return
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        self.writing = False
        try:
            self.sock.close()
        except OSError:
            pass
        self.sock = None
