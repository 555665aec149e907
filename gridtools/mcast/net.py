"""gridmcast sockets: the multicast sender and receiver sockets, and a small
non-blocking TCP connection with bounded line reading and an output buffer,
driven by one selectors loop per process."""

import errno
import selectors
import socket
import struct
import sys
import time

from gridtools.proto import errors
from gridtools.mcast import wire

BIG_BUFFER = 64 << 20   # socket buffer asked for; root may force it past rmem_max


def set_buffer(sock, opt, force_opt, size):
    """Ask for a big socket buffer (forced when we may) and return what we got."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, force_opt, size)
    except OSError:
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, size)
        except OSError:
            pass
    return sock.getsockopt(socket.SOL_SOCKET, opt)


def udp_sender(group, ttl, interface):
    """A socket that sends to `group`, out of `interface` (an IPv4 address)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    if interface:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
    # Multicast copies hold send-buffer memory until every receiver has read
    # them, so the send buffer must cover the whole window, not one burst.
    set_buffer(s, socket.SO_SNDBUF, getattr(socket, "SO_SNDBUFFORCE", 32), BIG_BUFFER * 2)
    s.setblocking(False)
    return s


SOL_UDP = 17
UDP_SEGMENT = 103    # Linux 4.18: send one buffer as many datagrams (GSO)
UDP_GRO = 104        # Linux 5.0: receive consecutive datagrams as one buffer
IP_MTU = 14


def path_mtu(sock):
    """The MTU of the route a connected UDP socket sends on, or 1500."""
    try:
        return sock.getsockopt(socket.IPPROTO_IP, IP_MTU)
    except OSError:
        return 1500


def gro_size(ancdata):
    """The segment size the kernel reports for a coalesced read, or 0."""
    for level, kind, data in ancdata:
        if level == SOL_UDP and kind == UDP_GRO and len(data) >= 2:
            return int.from_bytes(data[:4] if len(data) >= 4 else data[:2], sys.byteorder)
    return 0


def udp_receiver(group, interface):
    """A socket joined to `group` (host, port) on `interface`; returns (sock, rcvbuf)."""
    host, port = group
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    rcvbuf = set_buffer(s, socket.SO_RCVBUF, getattr(socket, "SO_RCVBUFFORCE", 33), BIG_BUFFER)
    # Bound to the group address so other groups on the same port stay out.
    s.bind((host, port))
    mreq = struct.pack("4s4s", socket.inet_aton(host), socket.inet_aton(interface or "0.0.0.0"))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    try:
        # Segmented datagrams then arrive as one read instead of forty.
        s.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        pass
    s.setblocking(False)
    return s, rcvbuf


def is_multicast(host):
    try:
        first = socket.inet_aton(host)[0]
    except OSError:
        return False
    return 224 <= first <= 239


def listen_tcp(host, port, backlog=64):
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, addr = infos[0]
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(addr)
    s.listen(backlog)
    s.setblocking(False)
    return s


def fmt_addr(addr):
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Conn:
    """A non-blocking TCP connection: bounded input, buffered output."""

    def __init__(self, sock, name=""):
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.name = name
        self.inbuf = bytearray()
        self.out = bytearray()
        self.eof = False

    def fileno(self):
        return self.sock.fileno()

    def recv(self, limit=1 << 20):
        """Read what is there into inbuf; sets eof on end or reset."""
        try:
            data = self.sock.recv(limit)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.eof = True
            return
        if not data:
            self.eof = True
        self.inbuf += data

    def lines(self):
        """Complete lines from inbuf; an over-long line is a protocol error."""
        out = []
        while True:
            i = self.inbuf.find(b"\n")
            if i < 0:
                if len(self.inbuf) > wire.MAX_LINE:
                    raise errors.ProtocolError(
                        f"{self.name}: line longer than {wire.MAX_LINE} bytes: {bytes(self.inbuf[:60])!r}")
                return out
            out.append(bytes(self.inbuf[:i + 1]))
            del self.inbuf[:i + 1]

    def send(self, data):
        self.out += data
        self.flush()

    def flush(self):
        """Write what the kernel takes now; returns False if the peer is gone."""
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

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Loop:
    """One selectors loop: callbacks on readable/writable, and a clock."""

    def __init__(self):
        self.sel = selectors.DefaultSelector()

    def watch(self, fileobj, on_read=None, on_write=None):
        events = (selectors.EVENT_READ if on_read else 0) | (selectors.EVENT_WRITE if on_write else 0)
        try:
            key = self.sel.get_key(fileobj)
        except (KeyError, ValueError):
            key = None
        if not events:
            if key:
                self.sel.unregister(fileobj)
            return
        if key:
            self.sel.modify(fileobj, events, (on_read, on_write))
        else:
            self.sel.register(fileobj, events, (on_read, on_write))

    def _current(self, key):
        """False for an event a handler earlier in the same batch made
        stale: it forgot the file (an EVICT drops the multicast socket, and
        its pending read must not run on None) or changed its callbacks
        (the file is level-triggered: a real event comes back next time)."""
        try:
            return self.sel.get_key(key.fileobj) is key
        except (KeyError, ValueError):
            return False

    def forget(self, fileobj):
        try:
            self.sel.unregister(fileobj)
        except (KeyError, ValueError):
            pass

    def once(self, timeout):
        for key, mask in self.sel.select(timeout):
            if not self._current(key):
                continue
            on_read, on_write = key.data
            if mask & selectors.EVENT_READ and on_read:
                on_read()
            if mask & selectors.EVENT_WRITE and on_write:
                on_write()


now = time.monotonic


def connect(host, port, timeout, wait=0.0):
    """A blocking connect with a deadline; errors as UnavailableError.
    For `wait` seconds a refused connection is tried again: the peer may be
    starting."""
    give_up = now() + wait
    while True:
        try:
            return socket.create_connection((host, port), timeout=timeout)
        except ConnectionRefusedError as e:
            if now() >= give_up:
                err = e
                break
        except OSError as e:
            err = e
            break
        time.sleep(0.02)
    raise errors.UnavailableError(f"cannot connect to {host}:{port}: {err.strerror or err}")


def would_block(e):
    return e.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS)
