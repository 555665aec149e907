"""The hub's peers service: workers the hub reaches itself instead of
waiting for them, and keeps reaching.  `--ssh HOST` starts one over ssh
(worker.bootstrap ships it; nothing is installed there); `--peer ADDR`
dials a `gridd worker --listen`.  Either way the connection is handed to
the server (adopt) and the worker speaks first, as the side that was
called: the hub answers with wire.connect_as in the hub role, the one
connecting side of the handshake, and the connection is a worker's like
any other.  When it drops the target is reached again after a delay that
doubles from FIRST_DELAY up to MAX_DELAY (back to the first after a
connection that lasted STEADY seconds); a worker drained by `gridd ctl
drain`, and any while the hub drains, is not.  A target whose spec.tries
starts in a row failed before its worker was up is not reached again
either (gridmap -S: an unreachable host); on_gone(target), when set, hears
of it.

With `--peer-tls-ca` (and a client certificate) the hub speaks TLS to
the workers it dials, as their client (server.adopt runs the handshake).
`--peer-file FILE` names more dialled workers, one address a line (`#`
starts a comment), and is read again on SIGHUP (reload): a peer added is
dialled, a peer removed is drained as `gridd ctl drain` does (no new
jobs; BYE once its running jobs end) or, not connected, no longer
dialled.  A file that cannot be read or parsed at SIGHUP leaves the peers
as they are; at most MAX_FILE bytes and MAX_PEERS peers.

Per target the hub holds one launcher process (ssh) or one connecting
socket, the payload while it is sent (about 30 KiB), one stderr line of
at most LINE bytes, and counts (never stores) up to bootstrap.NOISE bytes
of shell noise before the banner.  Name resolution for --peer is the
system's (getaddrinfo), done when dialling.
"""

import os
import time

from gridtools.io import net
from gridtools.proto import errors, wire
from gridtools.worker import bootstrap

FIRST_DELAY = 0.5           # seconds before reaching a target again
MAX_DELAY = 30.0            # ... doubling up to this
STEADY = 10.0               # a connection up this long resets the delay
BOOT_TIMEOUT = 60.0         # ssh started -> banner and payload sent
DIAL_TIMEOUT = 10.0         # connect() to a listening worker
STOP_GRACE = 5.0            # a closed ssh worker's launcher gets this long, then SIGTERM
LINE = 1000                 # bytes of one stderr line logged (the rest is cut)
MAX_FILE = 1 << 20          # bytes of a --peer-file
MAX_PEERS = 4096            # addresses in a --peer-file


class Spec:
    """One target from the command line: kind "ssh" (where = user@host)
    or "dialled" (where = an address), and for ssh the commands and slots."""

    def __init__(self, kind, where, ssh=bootstrap.SSH, python=bootstrap.PYTHON, slots=None,
                 tries=None, tags=None):
        self.kind = kind
        self.where = where
        self.ssh = ssh
        self.python = python
        self.slots = slots
        self.tries = tries          # failed starts in a row before giving up (None: never)
        self.tags = tags or {}      # the ssh worker's --tag K=V (gridmap --onall pins jobs)


def parse_ssh(text, ssh, python):
    """--ssh [N/]HOST (GNU parallel's sshlogin: N slots on HOST)."""
    slots = None
    head, sep, host = text.partition("/")
    if sep:
        slots = wire.uint(head, "--ssh: slots before /", 1, wire.MAX_SLOTS) \
            if wire.is_uint(head) else None
        if slots is None:
            raise errors.UsageError(f"--ssh: {text!r}: N/HOST needs a number of slots")
    else:
        host = text
    bootstrap.check_host(host)
    bootstrap.ssh_argv(host, ssh, python)           # the commands split, or a usage error
    return Spec("ssh", host, ssh, python, slots)


def parse_peer(text):
    net.parse_address(text)                         # a usage error now, not at each dial
    return Spec("dialled", text)


def read_peer_file(path):
    """--peer-file: the addresses in path, one a line, in order, each once;
    blank lines and what follows a # are ignored.  GridError (exit 78)
    when it cannot be read or a line is no address."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE + 1)
    except OSError as e:
        raise errors.GridError(f"cannot read peer file {path}: {e.strerror}", errors.CONFIG)
    if len(data) > MAX_FILE:
        raise errors.GridError(f"peer file {path}: more than {MAX_FILE} bytes", errors.CONFIG)
    return parse_peer_lines(data, path)


def parse_peer_lines(data, path):
    found = {}
    for n, line in enumerate(data.split(b"\n"), 1):
        words = line.partition(b"#")[0].split()
        if not words:
            continue
        try:
            if len(words) > 1:
                raise errors.UsageError("one address a line")
            text = words[0].decode("ascii")
            net.parse_address(text)
        except (UnicodeDecodeError, errors.UsageError) as e:
            why = "not ASCII" if isinstance(e, UnicodeDecodeError) else str(e)
            raise errors.GridError(f"peer file {path}, line {n}: {why}", errors.CONFIG) \
                from None
        found[text] = None
        if len(found) > MAX_PEERS:
            raise errors.GridError(f"peer file {path}: more than {MAX_PEERS} peers",
                                   errors.CONFIG)
    return list(found)


class Target:
    """One worker the hub keeps reaching, and the attempt under way."""

    def __init__(self, spec):
        self.spec = spec
        self.label = f"ssh {spec.where}" if spec.kind == "ssh" else f"peer {spec.where}"
        self.delay = FIRST_DELAY
        self.timer = None           # the next attempt, or this attempt's deadline
        self.conn = None            # the server's connection, once adopted
        self.sock = None            # ours until adopted
        self.proc = None            # ssh
        self.pidfd = None
        self.err_fd = None
        self.err_buf = b""
        self.last_err = ""          # ssh's last stderr line, for a failure's sentence
        self.banner = None
        self.out = b""              # payload still to write
        self.after = None           # the worker's first bytes, once the banner came
        self.stage = "ssh"          # ssh -> boot -> worker -> up
        self.check = None           # checks the worker's WELCOME
        self.up_since = None
        self.drained = False
        self.removed = None         # gone from this file (--peer-file, gridmap's
                                    # --sshloginfile): not reached again
        self.status = None
        self.failed_starts = 0      # in a row, the worker never up
        self.gone = False           # given up (spec.tries)


class Peers:
    """The service: verbs none (the worker's messages are the sessions
    service's once the handshake is done); greet() sees the handshake."""

    def __init__(self, server, opts):
        self.server = server
        self.opts = opts
        self.loop = server.loop
        self.targets = [Target(s) for s in getattr(opts, "peers", ())]
        self.tls = getattr(opts, "peer_tls", None)     # a client context: --peer-tls-ca
        self.peer_file = getattr(opts, "peer_file", None)
        self.from_file = {}         # address -> Target, for the peers of --peer-file
        for where in getattr(opts, "file_peers", ()):
            self._add(where)
        self.by_conn = {}
        self.payloads = {}          # worker argv -> (payload, sha256)
        self.stopped = False
        self.on_gone = None         # fn(target) when a target is given up
        self.verbs = {}
        if self.targets:
            server.call_later(0, self.start)

    def start(self):
        for t in self.targets:
            self.reach(t)

    # -- --peer-file, read again on SIGHUP ------------------------------------------

    def _add(self, where):
        """A peer of the file, unless --peer names it already."""
        if any(t.spec.kind == "dialled" and t.spec.where == where for t in self.targets):
            return None
        t = self.from_file[where] = Target(Spec("dialled", where))
        self.targets.append(t)
        return t

    def reload(self):
        """SIGHUP: read --peer-file again; dial the peers added, let go of
        those removed.  A file that cannot be read changes nothing."""
        if self.peer_file is None:
            return
        try:
            wanted = read_peer_file(self.peer_file)
        except errors.GridError as e:
            self.server.log(f"SIGHUP: keeping the old peers: {e}")
            return
        gone = [w for w in self.from_file if w not in wanted]
        added = [t for t in map(self._add, (w for w in wanted if w not in self.from_file))
                 if t is not None]
        for where in gone:
            self.remove(self.from_file.pop(where))
        for t in added:
            self.reach(t)
        self.server.log(f"SIGHUP: {self.peer_file}: {len(self.from_file)} peer"
                        f"{'s' * (len(self.from_file) != 1)}, {len(added)} added, "
                        f"{len(gone)} removed")

    def add(self, spec):
        """A target more, reached now (gridmap -S: a host added to its
        --sshloginfile during the run)."""
        t = Target(spec)
        self.targets.append(t)
        self.reach(t)
        return t

    def remove(self, t, source=None):
        """A peer gone from the file (source; by default --peer-file): a
        worker up is drained (BYE once its jobs are done), any other
        attempt ends; it is not reached again."""
        t.removed = source or self.peer_file
        self.targets.remove(t)
        conn = t.conn
        if conn is not None and conn in self.server.sessions.workers:
            self.server.sessions.drain(conn)
            return
        if t.timer is not None:
            t.timer.cancel()
            t.timer = None
        if t.proc is not None:
            t.stage = "failed"          # stopped: its exit status says no more
            bootstrap.stop(t.proc)
        if conn is not None:
            self.server.close(conn)     # mid-handshake: closed() ends it
        elif t.sock is not None:
            self._unwatch(t)
            t.sock.close()
            t.sock = None
        self.server.log(f"{t.label}: removed from {t.removed}")

    def opened(self, conn):
        pass

    def close(self):
        """The hub stops: no more attempts; launchers are told to end."""
        self.stopped = True
        for t in self.targets:
            if t.timer is not None:
                t.timer.cancel()
            self._unwatch(t)
            if t.sock is not None:
                t.sock.close()
                t.sock = None
            if t.proc is not None:
                bootstrap.stop(t.proc)

    def _guarded(self, t, fn, *args):
        """A loop callback for target t: an exception ends this attempt only."""
        def call():
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - costs this attempt, never the hub
                self.server.report(None, e)
                self.fail(t, f"internal error: {type(e).__name__}: {e}")
        return call

    def _later(self, t, delay, fn):
        if t.timer is not None:
            t.timer.cancel()
        t.timer = self.loop.call_later(delay, self._guarded(t, fn, t))

    # -- an attempt ---------------------------------------------------------------

    def reach(self, t):
        t.timer = None
        if self.stopped or self.server.draining or t.removed:
            return
        t.stage, t.status, t.check, t.up_since, t.last_err = "ssh", None, None, None, ""
        if t.spec.kind == "ssh":
            self.launch(t)
        else:
            self.dial(t)

    def launch(self, t):
        s = t.spec
        try:
            t.proc, t.sock = bootstrap.spawn(s.where, s.ssh, s.python)
        except errors.GridError as e:
            self.server.log(f"{t.label}: {e}")
            self.retry(t)
            return
        argv = tuple(bootstrap.worker_argv(slots=s.slots))
        argv += tuple(w for k, v in s.tags.items() for w in ("--tag", f"{k}={v}"))
        if argv not in self.payloads:       # the same for every start: made once
            self.payloads[argv] = bootstrap.payload(argv)
        t.out, sha = self.payloads[argv]
        self.server.log(f"{t.label}: starting a worker (pid {t.proc.pid}; shipping "
                        f"{len(bootstrap.serve.MANIFEST)} modules, {len(t.out)} bytes, "
                        f"sha256 {sha[:16]})")
        t.banner = bootstrap.Banner()
        t.after = None
        fd = t.sock.fileno()
        self.loop.add_reader(fd, self._guarded(t, self.boot_read, t))
        self.loop.add_writer(fd, self._guarded(t, self.boot_write, t))
        t.err_fd = t.proc.stderr.fileno()
        os.set_blocking(t.err_fd, False)
        self.loop.add_reader(t.err_fd, self._guarded(t, self.on_stderr, t))
        try:
            t.pidfd = os.pidfd_open(t.proc.pid)
            self.loop.add_reader(t.pidfd, self._guarded(t, self.on_exit, t))
        except (AttributeError, OSError):
            t.pidfd = None          # no pidfd: stderr's end starts polling for the exit
        self._later(t, BOOT_TIMEOUT, self.boot_timeout)

    def boot_write(self, t):
        try:
            n = t.sock.send(t.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            n = len(t.out)          # the far end went: boot_read or the exit says why
        t.out = t.out[n:]
        if not t.out:
            self.loop.remove_writer(t.sock.fileno())
            self.booted(t)

    def boot_read(self, t):
        try:
            data = t.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.loop.remove_reader(t.sock.fileno())
            if t.out:
                self.loop.remove_writer(t.sock.fileno())
            t.sock.close()
            t.sock = None
            self.ended(t)
            return
        if t.after is not None:
            t.after += data         # the worker is already talking; the payload is not all out
            return
        try:
            after = t.banner.feed(data)
        except bootstrap.BootError as e:
            self.fail(t, str(e))
            return
        if after is not None:
            t.stage = "boot"
            t.after = after
            self.booted(t)

    def booted(self, t):
        """Banner seen and payload written: the channel is the server's now."""
        if t.after is None or t.out or t.sock is None:
            return
        if t.timer is not None:
            t.timer.cancel()
            t.timer = None
        self.loop.remove_reader(t.sock.fileno())
        sock, t.sock = t.sock, None
        t.conn = self.server.adopt(sock, f"ssh:{t.spec.where}", self, "ssh", t.after)
        self.by_conn[t.conn] = t

    def boot_timeout(self, t):
        t.timer = None
        self.fail(t, f"no bootstrap banner within {BOOT_TIMEOUT:.0f}s")

    def dial(self, t):
        try:
            sock = t.sock = net.connect_nowait(net.parse_address(t.spec.where))
        except OSError as e:
            self.server.log(f"{t.label}: cannot connect: {e.strerror or e}; "
                            f"again in {t.delay:.1f}s")
            self.retry(t)
            return
        self.loop.add_writer(sock.fileno(), self._guarded(t, self.dialled, t))
        self._later(t, DIAL_TIMEOUT, self.dial_timeout)

    def dialled(self, t):
        sock = t.sock
        self.loop.remove_writer(sock.fileno())
        err = net.connect_error(sock)
        if err is not None:
            self.dial_failed(t, err.strerror)
            return
        if t.timer is not None:
            t.timer.cancel()
            t.timer = None
        net.tune(sock)
        t.sock = None
        t.stage = "boot"
        wrapped = net.wrap_client(sock, net.parse_address(t.spec.where), self.tls)
        t.conn = self.server.adopt(wrapped, t.spec.where, self, "dialled",
                                   tls=wrapped is not sock)
        self.by_conn[t.conn] = t

    def dial_timeout(self, t):
        t.timer = None
        self.loop.remove_writer(t.sock.fileno())
        self.dial_failed(t, f"no connection within {DIAL_TIMEOUT:.0f}s")

    def dial_failed(self, t, why):
        t.sock.close()
        t.sock = None
        self.server.log(f"{t.label}: cannot connect: {why}; again in {t.delay:.1f}s")
        self.retry(t)

    # -- the handshake (the server hands us what the worker says before it) --------

    def greet(self, conn, msg):
        t = self.by_conn.get(conn)
        if t is None:                   # closed meanwhile
            return
        try:
            if t.check is None:
                # ssh already vouched for the worker it started; a dialled one
                # proves the worker key, and checks ours.
                key = None if t.spec.kind == "ssh" else self.opts.worker_key
                line, t.check = wire.connect_as(msg, "hub", key, peer_roles=("worker",),
                                                hint="--worker-key")
                t.stage = "worker"
                self.server.send(conn, line)
                return
            t.check(msg)
        except wire.WireError as e:
            self.server.log(f"{t.label}: handshake: {e}")
            if t.proc is not None:
                t.stage = "failed"      # said; its launcher's end says no more
                bootstrap.stop(t.proc)
            if msg.verb != "ERR":
                self.server.send(conn, e.reply())
            self.server.close(conn)
            return
        t.check = None
        t.stage = "up"
        t.up_since = time.monotonic()
        self.server.joined(conn, "worker")

    def closed(self, conn, quiet):
        t = self.by_conn.pop(conn, None)
        if t is None:
            return
        t.conn = None
        slots = getattr(conn, "slots", None)
        t.drained = bool(slots is not None and slots.draining and not self.server.draining)
        if t.proc is not None and t.proc.poll() is None and not self.stopped:
            # The worker sees the end of its stdin and exits; if it does not, ssh goes.
            self._later(t, STOP_GRACE, self.stop_launcher)
        self.ended(t)

    def stop_launcher(self, t):
        t.timer = None
        bootstrap.stop(t.proc)

    # -- the end of an attempt ------------------------------------------------------

    def on_stderr(self, t):
        try:
            data = os.read(t.err_fd, 1 << 14)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.loop.remove_reader(t.err_fd)
            if t.err_buf:
                self.say(t, t.err_buf)
            t.err_buf = b""
            t.err_fd = None
            if t.pidfd is None and t.status is None:    # (on_exit reads its last words too)
                self._poll_exit(t)
            return
        buf = t.err_buf + data
        *lines, rest = buf.split(b"\n")
        for line in lines:
            self.say(t, line)
        if len(rest) > LINE:
            self.say(t, rest)
            rest = b""
        t.err_buf = rest

    def say(self, t, line):
        text = line[:LINE].decode("utf-8", "replace").rstrip("\r")
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
        if text:
            t.last_err = text
            self.server.log(f"{t.label}: {text}")

    def _poll_exit(self, t):
        if t.proc is not None and t.proc.poll() is None:
            self.loop.call_later(0.1, self._guarded(t, self._poll_exit, t))
            return
        self.on_exit(t)

    def on_exit(self, t):
        if t.proc is None:
            return
        if t.pidfd is not None:
            self.loop.remove_reader(t.pidfd)
            os.close(t.pidfd)
            t.pidfd = None
        t.status = t.proc.wait()
        if t.err_fd is not None:
            self.on_stderr(t)       # its last words, if they are there already
        if t.conn is not None:
            # What it said last may still be on its way through the socket.
            self._later(t, 1.0, self.close_after_exit)
            return
        self.ended(t)

    def close_after_exit(self, t):
        t.timer = None
        if t.conn is not None:
            self.server.close(t.conn)   # closed() ends the attempt

    def fail(self, t, why):
        """This attempt is over (why is said once): tear it down, try again later."""
        self.server.log(f"{t.label}: {why}")
        self._unwatch(t)
        if t.sock is not None:
            t.sock.close()
            t.sock = None
        if t.proc is not None:
            bootstrap.stop(t.proc)
            t.stage = "failed"      # its exit status says no more
        if t.conn is not None:
            self.server.close(t.conn)   # closed() ends the attempt
            return
        self.ended(t)

    def _unwatch(self, t):
        if t.sock is not None:
            self.loop.remove_reader(t.sock.fileno())
            self.loop.remove_writer(t.sock.fileno())

    def ended(self, t):
        """Once the channel is closed and the launcher (if any) has exited:
        say why, and reach the target again unless it should not be."""
        if t.sock is not None or t.conn is not None:
            return
        if t.proc is not None:
            if t.status is None:
                return              # on_exit comes
            if t.stage != "failed" and not (t.removed and t.status == 0):
                code, why = bootstrap.explain(t.status, "worker" if t.stage == "up" else t.stage,
                                              t.spec.where)
                if t.stage != "up" and t.last_err and t.status != 0:
                    why += f": {t.last_err}"
                self.server.log(f"{t.label}: {why}")
            if t.err_fd is not None:
                self.loop.remove_reader(t.err_fd)
                t.err_fd = None
            t.proc.stderr.close()
            t.proc = None
        elif t.stage == "up":
            self.server.log(f"{t.label}: the worker went away")
        if t.timer is not None:
            t.timer.cancel()
            t.timer = None
        if t.removed:
            if t.stage == "up":
                again = "started" if t.spec.kind == "ssh" else "dialled"
                self.server.log(f"{t.label}: removed from {t.removed}; not {again} again")
            return
        if t.drained:
            t.drained = False
            self.server.log(f"{t.label}: drained; not started again")
            return
        if t.up_since is not None and time.monotonic() - t.up_since >= STEADY:
            t.delay = FIRST_DELAY
        self.retry(t)

    def retry(self, t):
        if self.stopped or self.server.draining or t.removed:
            return
        t.failed_starts = 0 if t.up_since is not None else t.failed_starts + 1
        if t.spec.tries is not None and t.failed_starts >= t.spec.tries:
            n = t.failed_starts
            self.server.log(f"{t.label}: given up after {n} failed start{'s' * (n != 1)}")
            t.gone = True
            if self.on_gone is not None:
                self.on_gone(t)
            return
        delay = t.delay
        t.delay = min(t.delay * 2, MAX_DELAY)
        self._later(t, delay, self.reach)
