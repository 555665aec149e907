"""gridmcast's UDP sockets: the multicast sender and receiver sockets and the
kernel options they use (big buffers, GSO segments, GRO reads).  TCP
listening and connecting are gridtools.io.net's."""

import errno
import socket
import struct
import sys

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


def would_block(e):
    return e.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS)
