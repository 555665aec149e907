"""Listening and connecting (addresses as proto.address parses them, TLS
as proto.keys loads it), and the client side of a hub connection: the
blocking Channel and the HELLO handshake."""

import os
import socket
import stat

from gridtools.proto import address, errors, keys, wire

CONNECT_TIMEOUT = 10.0


def parse_address(text, default_host="127.0.0.1"):
    """host:port, :port, [v6]:port or unix:/path -> Address (UsageError)."""
    try:
        return address.parse(text, default_host)
    except address.AddressError as e:
        raise errors.UsageError(str(e)) from None


def listen(addr, backlog=1024):
    """A listening, non-blocking socket for addr."""
    if addr.family == socket.AF_UNIX:
        _remove_stale(addr.path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)       # the socket is born 0600: no chmod race
        try:
            s.bind(addr.path)
        finally:
            os.umask(old)
    else:
        infos = socket.getaddrinfo(addr.host, addr.port, addr.family if addr.host != "localhost"
                                   else socket.AF_UNSPEC, socket.SOCK_STREAM)
        fam, _, _, _, sa = infos[0]
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(sa)
    s.listen(backlog)
    s.setblocking(False)
    return s


def _remove_stale(path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise errors.UsageError(f"unix:{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)          # nobody listens: a leftover of a dead hub
        return
    except OSError:
        return
    finally:
        probe.close()
    raise errors.UnavailableError(f"unix:{path}: another process is listening there")


def bound_address(sock, addr):
    """The address a listening socket really has (port 0 resolved)."""
    if addr.family == socket.AF_UNIX:
        return addr
    host, port = sock.getsockname()[:2]
    return address.Address(addr.family, host, port)


def tune(sock):
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Idle connections are watched by the kernel: a vanished peer is
        # noticed in about 60 + 3 * 10 s without a byte from us.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for opt, val in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, opt):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), val)


def connect(addr, tls=None, timeout=CONNECT_TIMEOUT):
    """A connected, blocking socket (TLS-wrapped if a client context is given)."""
    try:
        if addr.family == socket.AF_UNIX:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(addr.path)
        else:
            s = socket.create_connection((addr.host, addr.port), timeout=timeout)
            tune(s)
        if tls is not None:
            s = tls.wrap_socket(s, server_hostname=addr.host if addr.host else None)
        else:
            s.sendall(b"\n")       # lets a TLS hub tell us at once that it is one
    except OSError as e:
        tls_error = tls_failure(e, addr)
        if tls_error is not None:
            raise tls_error from None
        raise errors.UnavailableError(f"cannot connect to {addr}: {e.strerror or e}")
    return s


def tls_failure(exc, addr):
    """The GridError for a failed TLS handshake, or None when exc is no TLS
    error (the classes are wire.tls_refusal's)."""
    found = wire.tls_refusal(exc)
    if found is None:
        return None
    code, text = found
    return grid_error(code, f"hub {addr}: {text}")


# -- the client side of the handshake ----------------------------------------

class Channel:
    """A blocking message channel over a socket (clients and ctl)."""

    def __init__(self, sock, addr):
        self.sock = sock
        self.addr = addr
        self.reader = wire.Reader()
        self.queue = []

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise errors.UnavailableError(f"hub {self.addr}: {e.strerror or e}")

    def recv(self, timeout=None):
        """The next message; UnavailableError when the hub hangs up."""
        while True:
            try:
                return next(self.reader)
            except StopIteration:
                pass
            except wire.WireError as e:
                raise errors.ProtocolError(f"hub {self.addr}: {e}")
            self.sock.settimeout(timeout)
            try:
                data = self.sock.recv(1 << 18)
            except TimeoutError:
                raise errors.UnavailableError(f"hub {self.addr}: no answer")
            except OSError as e:
                # With TLS 1.3 a refused client certificate shows at the first read.
                raise tls_failure(e, self.addr) or errors.UnavailableError(
                    f"hub {self.addr}: {e.strerror or e}")
            if not data:
                raise errors.UnavailableError(f"hub {self.addr} closed the connection")
            self.reader.feed(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def raise_err(msg, where):
    """Turn an ERR message into the matching GridError."""
    return grid_error(wire.err_code(msg), f"{where}: {msg.args[1] if len(msg.args) > 1 else 'error'}")


def grid_error(code, text):
    """The GridError class that goes with a protocol error code."""
    cls = {errors.NOPERM: errors.AuthError, errors.UNAVAILABLE: errors.UnavailableError,
           errors.PROTOCOL: errors.ProtocolError, errors.USAGE: errors.UsageError,
           errors.DATAERR: errors.DataError}.get(code, errors.GridError)
    return cls(text, code)


def handshake(chan, role, key, timeout=CONNECT_TIMEOUT, **extra):
    """Answer the hub's HELLO as `role`; return the hub's WELCOME message."""
    try:
        line, check = wire.connect_as(chan.recv(timeout), role, key, **extra)
        chan.send(line)
        return check(chan.recv(timeout))
    except wire.WireError as e:
        raise grid_error(e.code, f"hub {chan.addr}: {e}") from None


def dial(text, role, env, timeout=CONNECT_TIMEOUT):
    """Connect to the hub at address text and authenticate: (Channel, WELCOME)."""
    addr = parse_address(text)
    sock = connect(addr, keys.client_tls_from_env(env), timeout)
    chan = Channel(sock, addr)
    try:
        welcome = handshake(chan, role, keys.key_from_env(env, "GRID_KEY"), timeout)
    except BaseException:
        chan.close()
        raise
    return chan, welcome
