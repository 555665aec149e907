"""gridd worker: meets the hub (connects back and reconnects, or speaks on
stdio with HELLO first), then serves it with session.Worker on the one loop;
the worker's options, and MANIFEST, the modules that ship where gridtools
is not installed.
"""

import os
import random
import signal
import socket
import sys

from gridtools.io import net
from gridtools.io.loop import Loop
from gridtools.proto import errors, keys, wire
from gridtools.run import runner
from gridtools.worker.session import Worker, log

HANDSHAKE_TIMEOUT = 10.0

# What a host needs to run a worker, nothing else: these modules are what
# ships as source where gridtools is not installed (a test holds this list
# to the worker's real import closure in a fresh interpreter).
MANIFEST = ("gridtools", "gridtools.io", "gridtools.io.log", "gridtools.io.loop",
            "gridtools.io.net", "gridtools.proto", "gridtools.proto.address", "gridtools.proto.errors",
            "gridtools.proto.keys", "gridtools.proto.wire", "gridtools.run",
            "gridtools.run.relay", "gridtools.run.runner", "gridtools.worker",
            "gridtools.worker.files", "gridtools.worker.serve", "gridtools.worker.session",
            "gridtools.worker.__main__")
ENTRY = "gridtools.worker.__main__"    # python3 -m gridtools.worker; imported by no one

# -- meeting the hub ----------------------------------------------------------

def next_message(loop, chan, timeout):
    """The hub's next message during the handshake.  The loop runs while we
    wait, so a SIGTERM is acted on at once."""
    end = loop.time() + timeout
    while True:
        try:
            return next(chan.reader)
        except StopIteration:
            pass
        except wire.WireError as e:
            raise errors.GridError(f"hub broke the protocol: {e}", errors.PROTOCOL) from None
        if loop.time() >= end:
            raise errors.UnavailableError("no answer from the hub during the handshake")
        timer = loop.call_at(end, loop.stop)
        chan.on_input = loop.stop
        try:
            loop.run_forever()
        finally:
            timer.cancel()


def handshake_connector(loop, chan, key):
    """We called the hub: answer its HELLO, check its WELCOME."""
    try:
        line, check = wire.connect_as(next_message(loop, chan, HANDSHAKE_TIMEOUT), "worker", key)
        chan.send(line)
        check(next_message(loop, chan, HANDSHAKE_TIMEOUT))
    except wire.WireError as e:
        raise errors.GridError(f"hub {e}" if str(e).startswith("refused") else str(e),
                               e.code) from None


def handshake_acceptor(loop, chan, key):
    """The hub called us (--stdio): we say HELLO first."""
    nonce = wire.new_nonce()
    chan.send(wire.hello("worker", nonce, auth=wire.AUTH if key is not None else "none"))
    msg = next_message(loop, chan, HANDSHAKE_TIMEOUT)
    try:
        role, their = wire.check_hello(msg, roles=("hub",))
    except wire.WireError as e:
        last_words(chan, wire.error(e.code, str(e)))
        raise errors.GridError(str(e), errors.PROTOCOL) from None
    if key is not None and not wire.check_mac(key, role, nonce, their, msg.get("mac")):
        last_words(chan, wire.error(wire.E_NOPERM, "authentication failed"))
        raise errors.GridError("the hub failed authentication", errors.NOPERM)
    mac = wire.mac(key, "worker", their, nonce) if key is not None else None
    chan.send(wire.format("WELCOME", wire.VERSION, role="worker", mac=mac))


def last_words(chan, data):
    """An ERR before we give up; a hub that does not read it loses nothing."""
    chan.out += data
    try:
        chan.flush_blocking(5.0)
    except errors.GridError:
        pass


def pause(loop, delay):
    """Wait about delay seconds on the loop (a signal still acts at once);
    returns the next, longer delay."""
    loop.call_later(delay * random.uniform(0.8, 1.2), loop.stop)
    loop.run_forever()
    return min(delay * 2, 10.0)


def serve_connect(loop, hub, key, slots, name, tags, tls=None, once=False, debug=False,
                  lifeline=None):
    """Connect to the hub, serve, reconnect with backoff when it goes away.
    A refusal (keys, TLS, protocol) is a GridError for the caller."""
    addr = net.parse_address(hub)
    delay = 0.1
    while True:
        try:
            chan = net.Channel(net.connect(addr, tls, HANDSHAKE_TIMEOUT), addr)
        except errors.UnavailableError as e:
            if once:
                raise
            log(f"{e}; retrying in {delay:.1f}s")
            delay = pause(loop, delay)
            continue
        try:
            chan.attach(loop, loop.stop)
            handshake_connector(loop, chan, key)
            log(f"connected to {hub} as {name} with {slots} slot{'' if slots == 1 else 's'}")
            delay = 0.1
            w = Worker(chan, slots, name, tags, loop, debug, lifeline)
            try:
                w.run()
            except errors.GridError as e:
                if e.code == errors.NOPERM:
                    raise               # TLS 1.3: a refused certificate shows at a read
                raise errors.UnavailableError(str(e)) from None
            if w.bye:
                return 0
        except errors.UnavailableError as e:
            log(f"lost the hub: {e}; reconnecting")
        finally:
            chan.close()
        if once:
            return errors.UNAVAILABLE
        delay = pause(loop, delay)


def serve_stdio(loop, key, slots, name, tags, debug=False, lifeline=None):
    """Speak the protocol on stdin/stdout, HELLO first; exit on EOF.

    The channel is moved off fds 0 and 1, and fd 1 points at /dev/null, so
    a stray print() cannot corrupt the framing.
    """
    rfd = os.dup(0)
    wfd = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    try:
        same = os.path.sameopenfile(2, rfd)
    except OSError:
        same = False
    if same:
        os.dup2(devnull, 2)        # inetd: stderr is the socket too
    os.close(devnull)
    chan = net.Channel.over_fds(rfd, wfd)
    try:
        chan.attach(loop, loop.stop)
        handshake_acceptor(loop, chan, key)
        Worker(chan, slots, name, tags, loop, debug, lifeline).run()
    except errors.UnavailableError:
        pass
    finally:
        chan.close()
    return 0


def open_listeners(where, env, insecure, key):
    """The sockets --listen names: an address, or "systemd[:NAME]" for
    those the service manager passed (net.take_fds).  Refuses a
    non-loopback address without a key (or a caller's certificate
    required: key is then true)."""
    if net.is_systemd(where):
        socks = net.take_fds(net.listen_fds(env), where)
    else:
        addr = net.parse_address(where)
        if not addr.is_loopback and key is None and not insecure:
            raise errors.UsageError(f"refusing to listen on {addr} without a key: whoever "
                                    f"connects could run anything (give --key-file, "
                                    f"--tls-ca with --tls-cert, or --insecure)")
        try:
            socks = [net.listen(addr, backlog=8)]
        except OSError as e:
            raise errors.UnavailableError(f"cannot listen on {addr}: {e.strerror}") from None
        log(f"listening on {net.bound_address(socks[0], addr)}")
    for s in socks:
        s.setblocking(False)
        if s.family != socket.AF_UNIX and s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            host = s.getsockname()[0]
            if not insecure and key is None and not host.startswith("127.") and host != "::1":
                raise errors.UsageError(f"refusing to serve a socket on {host} without a key "
                                        f"(give --key-file, --tls-ca with --tls-cert, or "
                                        f"--insecure)")
    return socks


def tls_accept(sock, tls, where):
    """The TLS handshake with a hub that called (tls: a server context),
    waiting HANDSHAKE_TIMEOUT at most: the wrapped socket, or None (said
    why, and closed)."""
    sock.settimeout(HANDSHAKE_TIMEOUT)
    try:
        return tls.wrap_socket(sock, server_side=True)
    except OSError as e:
        log(f"hub {where}: TLS handshake failed: {getattr(e, 'reason', None) or e}")
        sock.close()
        return None


def serve_listen(loop, socks, key, slots, name, tags, debug=False, lifeline=None, tls=None):
    """Wait for a hub to call, serve it, wait for the next when it goes.
    One hub at a time: another that calls meanwhile is told ERR 75 and
    closed.  With tls (a server context) the hub's call is TLS.  A socket
    passed already connected (systemd Accept=yes) is served once.  Exit 0
    after BYE (drained)."""
    current = []

    def refuse(lsock):
        try:
            s, _ = lsock.accept()
        except OSError:
            return
        try:
            s.setblocking(False)
            s.send(wire.error(wire.E_TEMPFAIL, "busy: this worker serves another hub"))
        except OSError:
            pass
        s.close()

    def accept(lsock):
        if current:
            refuse(lsock)
            return
        try:
            s, peer = lsock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log(f"accept: {e.strerror}")
            return
        current.append((s, peer))
        loop.stop()

    listening = []
    for s in socks:
        if s.family == socket.AF_UNIX or s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            listening.append(s)
            loop.add_reader(s.fileno(), accept, s)
        else:
            current.append((s, s.getpeername()))
    while True:
        while not current:
            loop.run_forever()
        sock, peer = current[0]
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unix socket"
        if sock.family != socket.AF_UNIX:
            net.tune(sock)
            if tls is not None:
                sock = tls_accept(sock, tls, where)
                if sock is None:
                    current.clear()
                    continue
        chan = net.Channel(sock, where)
        w = None
        try:
            chan.attach(loop, loop.stop)
            handshake_acceptor(loop, chan, key)
            log(f"hub {where} called; serving it with {slots} slot{'' if slots == 1 else 's'}")
            w = Worker(chan, slots, name, tags, loop, debug, lifeline)
            w.run()
            log(f"hub {where} went away")
        except errors.GridError as e:
            log(f"hub {where}: {e}")    # a caller that fails the handshake costs its call
        finally:
            chan.close()
            current.clear()
        if (w is not None and w.bye) or not listening:
            return 0


def _terminated():
    raise SystemExit(0)


def main_worker(opts, key):
    """Entry from the command line; returns an exit status."""
    loop = Loop()
    lifeline = None
    try:
        loop.add_signal_handler(signal.SIGTERM, _terminated)
        if opts.stdio:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
        if opts.workdir:
            try:
                os.chdir(opts.workdir)
            except OSError as e:
                log(f"cannot use --workdir {opts.workdir}: {e.strerror}")
                return 73
        debug = getattr(opts, "debug", False)
        lifeline = runner.Lifeline(opts.slots)
        if opts.stdio:
            return serve_stdio(loop, key, opts.slots, opts.name, opts.tags, debug, lifeline)
        if opts.listen:
            return serve_listen(loop, opts.listeners, key, opts.slots, opts.name, opts.tags,
                                debug, lifeline, opts.tls)
        return serve_connect(loop, opts.connect, key, opts.slots, opts.name, opts.tags,
                             getattr(opts, "tls", None), getattr(opts, "once", False), debug,
                             lifeline)
    except errors.GridError as e:
        log(str(e))
        return e.code
    finally:
        if lifeline is not None:
            lifeline.close()
        loop.close()


# -- the command line: gridd worker, and python3 -m gridtools.worker -----------

def add_options(p):
    """The worker's options, defined once for both ways of starting it."""
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--connect", metavar="HUB", help="connect to the hub at HUB (and reconnect)")
    how.add_argument("--stdio", action="store_true",
                     help="speak the protocol on stdin/stdout, saying HELLO first; exit on EOF")
    how.add_argument("--listen", metavar="ADDR",
                     help="wait for a hub to connect (gridd hub --peer), at ADDR or on the "
                          "sockets systemd passed (ADDR = systemd, or systemd:NAME)")
    p.add_argument("--slots", metavar="N", type=int, default=os.cpu_count() or 1,
                   help="jobs at once (default: the number of cores)")
    p.add_argument("--tag", metavar="K=V", action="append", default=[],
                   help="advertise a tag that jobs may --require (repeatable)")
    p.add_argument("--name", metavar="NAME", help="name shown by the hub (default HOST-PID)")
    p.add_argument("--workdir", metavar="DIR", help="run jobs in DIR")
    p.add_argument("--key-file", metavar="FILE",
                   help="worker key (else $GRID_KEY or $GRID_KEY_FILE)")
    p.add_argument("--insecure", action="store_true",
                   help="--listen on a non-loopback address without a key")
    p.add_argument("--tls-ca", metavar="FILE",
                   help="--connect: TLS, trusting this CA; --listen: require the hub's "
                        "certificate signed by it")
    p.add_argument("--tls-cert", metavar="FILE",
                   help="TLS certificate (PEM): --connect's client one, or the one "
                        "--listen serves TLS with")
    p.add_argument("--tls-key", metavar="FILE", help="its private key (PEM)")


def run(opts, env):
    """Check the options, read the key and certificates, serve.  Raises
    errors.GridError for the caller to report; returns an exit status."""
    opts.tags = wire.parse_pairs(opts.tag, "--tag")
    if not 1 <= opts.slots <= wire.MAX_SLOTS:
        raise errors.UsageError(f"--slots: need 1 to {wire.MAX_SLOTS}, got {opts.slots}")
    if opts.name is None:
        opts.name = f"{socket.gethostname()}-{os.getpid()}"
    if opts.connect:
        net.parse_address(opts.connect)             # a usage error now, not a retry loop
    key = keys.key_option(opts.key_file, env, "GRID_KEY")
    if opts.listen:
        # As a hub's: a certificate to serve TLS, and a CA to require the caller's.
        opts.tls = None
        if opts.tls_cert or opts.tls_key or opts.tls_ca:
            if not (opts.tls_cert and opts.tls_key):
                raise errors.UsageError("--listen with TLS needs --tls-cert and --tls-key "
                                        "(--tls-ca: require the hub's certificate)")
            opts.tls = keys.server_tls(opts.tls_cert, opts.tls_key, opts.tls_ca)
        opts.listeners = open_listeners(opts.listen, env, opts.insecure,
                                        key or (opts.tls_ca and opts.tls_cert))
    else:
        opts.tls = keys.client_tls(opts.tls_ca, opts.tls_cert, opts.tls_key) if opts.tls_ca \
            else None
    opts.debug = bool(env.get("GRID_DEBUG"))
    return main_worker(opts, key)


def main(argv=None):
    """python3 -m gridtools.worker: the same options and the same path as
    gridd worker, from a copy of MANIFEST alone."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):           # usage errors exit 64, as gridd's do
            self.print_usage(sys.stderr)
            self.exit(errors.USAGE, f"{self.prog}: error: {message}\n")

    p = Parser(prog="gridd worker", description="Run jobs a hub sends; logs go to stderr.")
    add_options(p)
    try:
        return run(p.parse_args(argv), dict(os.environ))
    except errors.GridError as e:
        log(f"error: {e}")
        return e.code
    except KeyboardInterrupt:
        return errors.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
