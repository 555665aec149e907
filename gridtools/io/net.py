"""Listening and connecting (addresses as proto.address parses them, TLS
as proto.keys loads it), the one buffered message connection (Channel:
blocking for clients, on the loop for the worker), and the connecting side
of the HELLO handshake.  Shipped with the worker: stdlib and proto only."""

import errno
import math
import os
import select
import socket
import stat
import time

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


MAX_LISTEN_FDS = 64         # sockets taken from a service manager


def listen_fds(env):
    """Sockets passed by systemd socket activation, as sd_listen_fds(3)
    with unset_environment: [(name, socket)], fds 3 and up, when LISTEN_PID
    is ours (else none); names from LISTEN_FDNAMES, "unknown" without it.
    The variables are removed so jobs do not misread them, and the fds are
    made close-on-exec.  UsageError for a count or names that do not fit."""
    if env.get("LISTEN_PID") != str(os.getpid()):
        return []
    count, names = env.get("LISTEN_FDS", ""), env.get("LISTEN_FDNAMES")
    for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(k, None)
        os.environ.pop(k, None)
    if not wire.is_uint(count) or len(count) > 4 or int(count) > MAX_LISTEN_FDS:
        raise errors.UsageError(f"LISTEN_FDS: expected 0 to {MAX_LISTEN_FDS}, "
                                f"got {count[:20]!r}")
    n = int(count)
    names = ["unknown"] * n if names is None else names.split(":")
    if len(names) != n:
        raise errors.UsageError(f"LISTEN_FDNAMES: {len(names)} names for {n} sockets")
    socks = []
    for i, fd in enumerate(range(3, 3 + n)):
        try:
            os.set_inheritable(fd, False)
            socks.append((names[i], socket.socket(fileno=fd)))
        except OSError as e:
            raise errors.UsageError(f"systemd socket fd {fd}: not a socket: "
                                    f"{e.strerror}") from None
    return socks


def is_systemd(text):
    """--listen systemd or systemd:NAME (sockets passed, not an address)."""
    return text == "systemd" or text.startswith("systemd:")


def take_fds(passed, text):
    """The sockets of passed ([(name, socket)], listen_fds' answer) that
    `systemd` (all of them) or `systemd:NAME` (those named NAME) selects,
    removed from passed.  UsageError when none is there."""
    name = text.partition(":")[2] if text != "systemd" else None
    if name == "":
        raise errors.UsageError(f"{text!r}: expected systemd or systemd:NAME")
    chosen = [p for p in passed if name is None or p[0] == name]
    if not chosen:
        have = ", ".join(sorted({n for n, _ in passed})) or "none"
        raise errors.UsageError(f"{text}: no socket passed by systemd "
                                f"{'is named ' + repr(name) if name else 'is left'} "
                                f"(LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES; names: {have})")
    for p in chosen:
        passed.remove(p)
    return [s for _, s in chosen]


def is_listening(sock):
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) != 0


def socket_address(sock):
    """The Address a socket is bound to (one passed by a service manager)."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        path = name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else name
        path = "@" + path[1:] if path.startswith("\0") else path     # abstract
        return address.Address(socket.AF_UNIX, path=path or "(unnamed)")
    return address.Address(sock.family, name[0], name[1])


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
    """A connected socket, TLS-wrapped if a client context is given and
    the address is not a unix socket (a hub speaks TLS on TCP only)."""
    try:
        if addr.family == socket.AF_UNIX:
            tls = None
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


def wrap_client(sock, addr, tls):
    """sock (connected to addr, or connecting) wrapped in the client
    context tls for a caller on the loop, which drives the handshake
    (do_handshake); the peer's certificate must name addr's host.  A unix
    socket stays plain, as connect() leaves it."""
    if tls is None or addr.family == socket.AF_UNIX:
        return sock
    return tls.wrap_socket(sock, server_hostname=addr.host, do_handshake_on_connect=False)


def connect_nowait(addr, sndbuf=None):
    """Start connecting to addr (a proto.address Address with a numeric
    host, or a unix path) without waiting, for a caller on the loop: the
    socket turns writable when it is done, and connect_error() then says
    how it went.  OSError when it failed at once."""
    if addr.family == socket.AF_UNIX:
        s, target = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), addr.path
    else:
        fam, _, _, _, target = socket.getaddrinfo(addr.host, addr.port, addr.family,
                                                  socket.SOCK_STREAM)[0]
        s = socket.socket(fam, socket.SOCK_STREAM)
    s.setblocking(False)
    if sndbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    err = s.connect_ex(target)
    if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
        s.close()
        raise OSError(err, os.strerror(err))
    return s


def connect_error(sock):
    """None once a connect_nowait() socket is connected, else its OSError."""
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    return OSError(err, os.strerror(err)) if err else None


def tls_failure(exc, addr):
    """The GridError for a failed TLS handshake, or None when exc is no TLS
    error (the classes are wire.tls_refusal's)."""
    found = wire.tls_refusal(exc)
    if found is None:
        return None
    code, text = found
    return grid_error(code, f"hub {addr}: {text}")


# -- the buffered connection ---------------------------------------------------

class Channel:
    """A buffered message connection to a hub: a socket (plain or TLS), or
    a pair of fds for a worker on stdio.  Its fds are non-blocking.

    Used blocking (clients, ctl): send() writes everything out, recv()
    waits for the next message.  Attached to a Loop (the worker): send()
    queues, and what a turn queued leaves in one write at the turn's end;
    on_input() runs after bytes arrive, with the messages in .reader.
    Every failure is a GridError: UnavailableError when the connection is
    gone, the TLS table's error when the hub refused us."""

    def __init__(self, sock, addr, rfd=None, wfd=None):
        self.sock = sock
        self.addr = addr
        self.rfd = sock.fileno() if sock is not None else rfd
        self.wfd = sock.fileno() if sock is not None else wfd
        self.tls = hasattr(sock, "pending")
        self.would_block = (BlockingIOError, InterruptedError)
        if self.tls:
            import ssl
            self.would_block += (ssl.SSLWantReadError, ssl.SSLWantWriteError)
        if sock is not None:
            sock.setblocking(False)
        else:
            os.set_blocking(rfd, False)
            os.set_blocking(wfd, False)
        self.reader = wire.Reader()
        self.out = bytearray()
        # Reads land here: a fresh 256 KiB bytes object per read costs an mmap.
        self.rbuf = bytearray(1 << 18)
        self.loop = None
        self.on_input = None
        self.flush_due = False      # a flush is queued, or waits for writability
        self.waiting = False        # the loop watches wfd for writability

    @classmethod
    def over_fds(cls, rfd, wfd, addr="on stdio"):
        return cls(None, addr, rfd, wfd)

    # -- both ways --------------------------------------------------------------

    def read_some(self):
        """Feed what has arrived to the reader; False at end of stream."""
        try:
            if self.tls:
                data = self.sock.recv(1 << 18)
                while self.sock.pending():
                    data += self.sock.recv(self.sock.pending())
            else:
                data = memoryview(self.rbuf)[:os.readv(self.rfd, [self.rbuf])]
        except self.would_block:
            return True
        except OSError as e:
            # With TLS 1.3 a refused client certificate shows at the first read.
            raise tls_failure(e, self.addr) or errors.UnavailableError(
                f"hub {self.addr}: {e.strerror or e}") from None
        if not data:
            return False
        self.reader.feed(data)
        return True

    def flush(self):
        """Write what the connection takes now; True when all is out."""
        out = self.out
        while out:
            try:
                if self.tls:
                    n = self.sock.send(out[:1 << 18])
                else:
                    n = os.write(self.wfd, out)
            except self.would_block:
                return False
            except OSError as e:
                raise errors.UnavailableError(f"hub {self.addr}: {e.strerror or e}") from None
            del out[:n]
        return True

    def send(self, data):
        self.out += data
        if self.loop is None:
            self.flush_blocking()
        elif not self.flush_due:
            self.flush_due = True
            self.loop.call_soon(self._flush_soon)

    def close(self):
        self.detach()
        if self.sock is not None:
            self.sock.close()
            return
        for fd in {self.rfd, self.wfd}:
            try:
                os.close(fd)
            except OSError:
                pass

    # -- blocking -------------------------------------------------------------

    def recv(self, timeout=None):
        """The next message, waiting at most timeout seconds (None: for ever)."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return next(self.reader)
            except StopIteration:
                pass
            except wire.WireError as e:
                raise errors.ProtocolError(f"hub {self.addr}: {e}") from None
            if not _wait(self.rfd, select.POLLIN, end):
                raise errors.UnavailableError(f"hub {self.addr}: no answer")
            if not self.read_some():
                raise errors.UnavailableError(f"hub {self.addr} closed the connection")

    def flush_blocking(self, timeout=None):
        end = None if timeout is None else time.monotonic() + timeout
        while not self.flush():
            if not _wait(self.wfd, select.POLLOUT, end):
                raise errors.UnavailableError(f"hub {self.addr}: write timed out")

    # -- on a loop --------------------------------------------------------------

    def attach(self, loop, on_input):
        """Serve on loop: on_input() runs whenever bytes arrived (the end of
        the stream raises UnavailableError out of the loop instead)."""
        self.loop = loop
        self.on_input = on_input
        loop.add_reader(self.rfd, self._readable)
        if self.out:
            self.flush_due = True
            loop.call_soon(self._flush_soon)

    def detach(self):
        """Back to blocking use; what is queued stays queued."""
        loop, self.loop = self.loop, None
        if loop is None:
            return
        loop.remove_reader(self.rfd)
        if self.waiting:
            self.waiting = False
            loop.remove_writer(self.wfd)
        self.flush_due = False

    def _readable(self):
        if not self.read_some():
            raise errors.UnavailableError(f"hub {self.addr} closed the connection")
        self.on_input()

    def _flush_soon(self):
        if self.loop is None or self.waiting:
            return
        if self.flush():
            self.flush_due = False
        else:
            self.waiting = True
            self.loop.add_writer(self.wfd, self._writable)

    def _writable(self):
        if self.flush():
            self.waiting = self.flush_due = False
            self.loop.remove_writer(self.wfd)


def _wait(fd, event, end):
    """Wait until fd is ready for event or the monotonic clock reaches end
    (None: no limit); False on time-out."""
    p = select.poll()
    p.register(fd, event)
    left = None if end is None else max(0, math.ceil((end - time.monotonic()) * 1000))
    return bool(p.poll(left))


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
