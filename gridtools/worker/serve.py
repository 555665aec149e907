"""The worker: takes jobs from a hub, runs each as a child process in its own
process group, relays its output as framed data, reports one DONE per job.

It imports only the standard library and the modules in MANIFEST, so a
copy of those runs it on a host where nothing is installed.  One selectors
loop watches the hub channel, every job's pipes and every job's pidfd.

Flow control: a job may have WINDOW bytes of output sent and not yet
acknowledged by the hub (ACK); past that its pipes are not read, so a slow
reader at the far end slows the job itself.
"""

import collections
import heapq
import os
import random
import selectors
import signal
import socket
import sys
import time

from gridtools.proto import address, errors, keys, wire
from gridtools.run import runner

WINDOW = 1 << 20            # unacknowledged output bytes per job
KILL_GRACE = 2.0            # seconds between SIGTERM and SIGKILL
READ_SIZE = 1 << 16
HANDSHAKE_TIMEOUT = 10.0

# What a host needs to run a worker, nothing else: these modules are what
# ships as source where gridtools is not installed (a test holds this list
# to the worker's real import closure in a fresh interpreter).
MANIFEST = ("gridtools", "gridtools.proto", "gridtools.proto.address", "gridtools.proto.errors",
            "gridtools.proto.keys", "gridtools.proto.wire", "gridtools.run",
            "gridtools.run.runner", "gridtools.worker", "gridtools.worker.serve",
            "gridtools.worker.__main__")
ENTRY = "gridtools.worker.__main__"    # python3 -m gridtools.worker; imported by no one

EX_UNAVAILABLE, EX_PROTOCOL, EX_NOPERM = errors.UNAVAILABLE, errors.PROTOCOL, errors.NOPERM


def log(text):
    sys.stderr.write(f"gridd worker: {text}\n")


class Lost(Exception):
    """The channel to the hub is gone."""


class Fatal(Exception):
    """Give up: wrong key, wrong protocol."""

    def __init__(self, text, code):
        super().__init__(text)
        self.code = code


class Link:
    """The protocol channel: a socket, or a pair of fds (--stdio)."""

    def __init__(self, rfd, wfd, sock=None):
        self.rfd = rfd
        self.wfd = wfd
        self.sock = sock
        self.reader = wire.Reader()
        self.out = bytearray()
        # Reads land here: a fresh 256 KiB bytes per read costs an mmap.
        self.rbuf = bytearray(1 << 18)

    def read_some(self):
        try:
            n = os.readv(self.rfd, [self.rbuf])
        except BlockingIOError:
            return True
        except OSError as e:
            raise Lost(f"read: {e.strerror}")
        if not n:
            return False
        self.reader.feed(memoryview(self.rbuf)[:n])
        return True

    def send(self, data):
        self.out += data

    def flush(self):
        """Write what we can; True when everything is out."""
        while self.out:
            try:
                n = os.write(self.wfd, self.out)
            except BlockingIOError:
                return False
            except OSError as e:
                raise Lost(f"write: {e.strerror}")
            del self.out[:n]
        return True

    def flush_blocking(self, timeout=5.0):
        end = time.monotonic() + timeout
        while not self.flush():
            left = end - time.monotonic()
            if left <= 0:
                raise Lost("write: timed out")
            sel = selectors.DefaultSelector()
            sel.register(self.wfd, selectors.EVENT_WRITE)
            sel.select(left)
            sel.close()

    def recv_blocking(self, timeout):
        end = time.monotonic() + timeout
        while True:
            try:
                return next(self.reader)
            except StopIteration:
                pass
            except wire.WireError as e:
                raise Fatal(f"hub broke the protocol: {e}", EX_PROTOCOL)
            left = end - time.monotonic()
            if left <= 0:
                raise Lost("no answer from the hub during the handshake")
            sel = selectors.DefaultSelector()
            sel.register(self.rfd, selectors.EVENT_READ)
            ready = sel.select(left)
            sel.close()
            if ready and not self.read_some():
                raise Lost("the hub closed the connection during the handshake")

    def close(self):
        if self.sock is not None:
            self.sock.close()
        else:
            for fd in {self.rfd, self.wfd}:
                try:
                    os.close(fd)
                except OSError:
                    pass


class Job:
    __slots__ = ("wid", "child", "unacked", "reading", "inq", "inpos", "input_done",
                 "writing", "status", "timed_out", "cancelled", "deadline", "killed")

    def __init__(self, wid, child):
        self.wid = wid
        self.child = child
        self.unacked = 0
        self.reading = True
        self.inq = collections.deque()
        self.inpos = 0
        self.input_done = False
        self.writing = False
        self.status = None
        self.timed_out = False
        self.cancelled = False
        self.deadline = None
        self.killed = False


class _NoLifeline:
    """A Worker run in process by a test: nobody watches its jobs."""

    def started(self, child):
        pass

    def ended(self, child):
        pass


class Worker:
    def __init__(self, link, slots, name, tags, debug=False, lifeline=None):
        self.debug = debug
        self.lifeline = lifeline or _NoLifeline()
        self.link = link
        self.slots = slots
        self.name = name
        self.tags = tags
        self.sel = selectors.DefaultSelector()
        self.jobs = {}
        self.timers = []            # heap of (when, wid)
        self.handlers = {
            "RUN": self.on_run, "IN": self.on_in, "KILL": self.on_kill,
            "CANCEL": self.on_cancel, "ACK": self.on_ack, "PING": self.on_ping,
            "PONG": self.on_nothing, "ERR": self.on_err, "BYE": self.on_bye,
        }
        self.bye = False

    # -- the loop -----------------------------------------------------------

    def run(self):
        """Serve until the channel closes (raises Lost) or the hub says BYE."""
        link = self.link
        os.set_blocking(link.rfd, False)
        os.set_blocking(link.wfd, False)
        self.sel.register(link.rfd, selectors.EVENT_READ, (self.on_link, 0))
        watching_write = False
        try:
            link.send(wire.format("READY", slots=self.slots, name=self.name, pid=os.getpid(),
                                  **{"tag." + k: v for k, v in self.tags.items()}))
            while not self.bye:
                done = link.flush()
                if done == watching_write:      # start or stop waiting to write
                    watching_write = not done
                    self.watch_write(watching_write)
                timeout = None
                if self.timers:
                    timeout = max(0.0, self.timers[0][0] - time.monotonic())
                for key, _ in self.sel.select(timeout):
                    fn, arg = key.data
                    fn(arg)
                self.check_timers()
        finally:
            self.kill_all()

    def watch_write(self, on):
        link = self.link
        if link.rfd == link.wfd:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if on else 0)
            self.sel.modify(link.rfd, events, (self.on_link, 0))
        elif on:
            self.sel.register(link.wfd, selectors.EVENT_WRITE, (self.on_nothing, 0))
        else:
            self.sel.unregister(link.wfd)

    def on_link(self, _):
        if not self.link.read_some():
            raise Lost("the hub closed the connection")
        while True:
            try:
                msg = next(self.link.reader)
            except StopIteration:
                return
            except wire.WireError as e:
                self.link.send(wire.error(e.code, f"worker: {e}"))
                if e.fatal:
                    raise Lost(f"protocol error: {e}")
                continue
            handler = self.handlers.get(msg.verb)
            if handler is None:
                self.link.send(wire.error(wire.E_PROTOCOL, f"worker: unknown verb {msg.verb}"))
                continue
            try:
                handler(msg)
            except wire.WireError as e:
                self.link.send(e.reply(job=self.job_named(msg)))
                if msg.verb == "RUN":
                    self.refuse(msg)
            except (Lost, Fatal):
                raise
            except Exception as e:  # noqa: BLE001 - a job's fields never kill the worker
                log(f"internal error on {msg.verb}: {type(e).__name__}: {e}")
                if self.debug:
                    import traceback
                    traceback.print_exception(e)
                self.link.send(wire.error(wire.E_SOFTWARE, f"worker: internal error on "
                                          f"{msg.verb}", job=self.job_named(msg)))
                self.fail_job(msg)

    def job_named(self, msg):
        """The job id a message names, if it is one (for an ERR's job=)."""
        return msg.args[0] if msg.args and wire.is_uint(msg.args[0]) else None

    def refuse(self, msg):
        """A RUN we would not start still ends in one result at the hub."""
        wid = self.job_named(msg)
        if wid is not None and wid not in self.jobs:
            self.link.send(wire.format("DONE", wid, exit=127, outcome=errors.FAILED))

    def fail_job(self, msg):
        """An internal error while handling msg: its job ends, once."""
        wid = self.job_named(msg)
        if wid is None:
            return
        job = self.jobs.get(wid)
        if job is None:
            if msg.verb == "RUN":
                self.refuse(msg)
            return
        job.cancelled = True
        self.terminate(job)

    def on_nothing(self, _):
        pass

    def on_ping(self, msg):
        self.link.send(b"PONG\n")

    def on_err(self, msg):
        log(f"hub says: {' '.join(msg.args)}")

    def on_bye(self, msg):
        self.bye = True

    # -- jobs ---------------------------------------------------------------

    def on_run(self, msg):
        msg.id_arg(0)
        wid = msg.arg(0)
        if wid in self.jobs:
            raise wire.WireError(f"RUN: job {wid} is already running", wire.E_USAGE)
        body = msg.body or b""
        if msg.get("argv") == "1":
            argv = wire.decode_argv(body)
        else:
            argv = runner.shell_argv(body.decode("utf-8", "surrogateescape"))
        if not argv or not argv[0] or "\0" in argv[0]:
            raise wire.WireError("RUN: an empty command", wire.E_USAGE, field="argv")
        fed = msg.get("stdin") == "1"
        timeout = msg.seconds("timeout")
        try:
            child = runner.spawn(argv, stdin=runner.PIPE if fed else None)
            self.lifeline.started(child)
        except OSError as e:
            self.send_out(wid, 2, f"gridd worker: cannot run: {e.strerror}\n".encode())
            self.link.send(wire.format("DONE", wid, exit=127))
            return
        job = self.jobs[wid] = Job(wid, child)
        self.sel.register(child.stdout, selectors.EVENT_READ, (self.on_output, (job, 1)))
        self.sel.register(child.stderr, selectors.EVENT_READ, (self.on_output, (job, 2)))
        self.sel.register(child.pidfd, selectors.EVENT_READ, (self.on_exit, job))
        if not fed:
            job.input_done = True
        if timeout is not None:
            job.deadline = time.monotonic() + timeout
            heapq.heappush(self.timers, (job.deadline, wid))

    def job_for(self, msg):
        return self.jobs.get(msg.arg(0))

    def on_in(self, msg):
        job = self.job_for(msg)
        if job is None or job.child.stdin is None:
            return          # finished already, or it closed its stdin
        if msg.body:
            job.inq.append(msg.body)
        if msg.get("eof") == "1":
            job.input_done = True
        self.want_write(job)

    def on_kill(self, msg):
        job = self.job_for(msg)
        if job is None:
            return
        sig = msg.int("sig", signal.SIGTERM, 1, wire.MAX_SIGNAL)
        job.child.kill(sig)

    def on_cancel(self, msg):
        job = self.job_for(msg)
        if job is not None and not job.cancelled:
            job.cancelled = True
            self.terminate(job)

    def on_ack(self, msg):
        job = self.job_for(msg)
        if job is None:
            return
        job.unacked = max(0, job.unacked - msg.int("n", 0))
        if not job.reading and job.unacked < WINDOW:
            job.reading = True
            for fd_no, fd in ((1, job.child.stdout), (2, job.child.stderr)):
                if fd is not None:
                    self.sel.register(fd, selectors.EVENT_READ, (self.on_output, (job, fd_no)))

    def terminate(self, job):
        """SIGTERM the group now, SIGKILL after a grace period."""
        job.child.kill(signal.SIGTERM)
        job.killed = True
        job.deadline = time.monotonic() + KILL_GRACE
        heapq.heappush(self.timers, (job.deadline, job.wid))

    def check_timers(self):
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            when, wid = heapq.heappop(self.timers)
            job = self.jobs.get(wid)
            if job is None or job.deadline != when:
                continue
            if job.killed:
                job.child.kill(signal.SIGKILL)
                job.deadline = None
            else:
                job.timed_out = True
                self.terminate(job)

    def send_out(self, wid, fd_no, data):
        self.link.send(wire.format("OUT", wid, fd=fd_no, body=data))

    def on_output(self, arg):
        job, fd_no = arg
        fd = job.child.stdout if fd_no == 1 else job.child.stderr
        if fd is None or self.jobs.get(job.wid) is not job:
            return
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        if data:
            self.send_out(job.wid, fd_no, data)
            job.unacked += len(data)
            if job.unacked >= WINDOW and job.reading:
                job.reading = False
                for f in (job.child.stdout, job.child.stderr):
                    if f is not None:
                        self.sel.unregister(f)
            return
        self.close_out(job, fd_no)
        self.maybe_done(job)

    def close_out(self, job, fd_no):
        fd = job.child.stdout if fd_no == 1 else job.child.stderr
        if fd is None:
            return
        if job.reading:
            self.sel.unregister(fd)
        os.close(fd)
        if fd_no == 1:
            job.child.stdout = None
        else:
            job.child.stderr = None

    def on_exit(self, job):
        if job.status is not None:
            return
        self.sel.unregister(job.child.pidfd)
        self.lifeline.ended(job.child)
        job.status = job.child.reap()
        if job.reading:
            # What it wrote before exiting is in the pipes; a background
            # grandchild holding them open must not hold the job up.
            for fd_no in (1, 2):
                fd = job.child.stdout if fd_no == 1 else job.child.stderr
                while fd is not None and job.unacked < WINDOW:
                    try:
                        data = os.read(fd, READ_SIZE)
                    except BlockingIOError:
                        break
                    if not data:
                        break
                    self.send_out(job.wid, fd_no, data)
                    job.unacked += len(data)
                if job.unacked < WINDOW:
                    self.close_out(job, fd_no)
        self.maybe_done(job)

    def maybe_done(self, job):
        c = job.child
        if job.status is None or c.stdout is not None or c.stderr is not None:
            return
        self.close_stdin(job)
        del self.jobs[job.wid]
        code, sig = job.status
        outcome = errors.TIMEOUT if job.timed_out else errors.CANCELLED if job.cancelled \
            else None
        self.link.send(wire.format("DONE", job.wid, exit=code, sig=sig, outcome=outcome))

    def want_write(self, job):
        c = job.child
        if c.stdin is None:
            return
        if not job.inq:
            if job.input_done:
                self.close_stdin(job)
            return
        if not job.writing:
            self.sel.register(c.stdin, selectors.EVENT_WRITE, (self.on_writable, job))
            job.writing = True

    def on_writable(self, job):
        fd = job.child.stdin
        if fd is None or not job.writing:
            return
        taken = 0
        try:
            while job.inq:
                block = job.inq[0]
                n = os.write(fd, memoryview(block)[job.inpos:])
                job.inpos += n
                taken += n
                if job.inpos >= len(block):
                    job.inq.popleft()
                    job.inpos = 0
        except BlockingIOError:
            pass
        except (BrokenPipeError, ConnectionResetError):
            # The job stopped reading; its exit status tells the story.
            taken += sum(len(b) for b in job.inq) - job.inpos
            job.inq.clear()
            job.inpos = 0
            job.input_done = True
        if taken:
            self.link.send(wire.format("ACK", job.wid, n=taken))
        if not job.inq:
            self.sel.unregister(fd)
            job.writing = False
            if job.input_done:
                self.close_stdin(job)

    def close_stdin(self, job):
        if job.writing:
            self.sel.unregister(job.child.stdin)
            job.writing = False
        job.child.close_stdin()

    def kill_all(self):
        """The hub is gone: nobody will collect these jobs' results."""
        for job in list(self.jobs.values()):
            job.child.kill(signal.SIGKILL)
            if job.status is None:
                self.lifeline.ended(job.child)
                job.child.reap()
            for fd in (job.child.stdout, job.child.stderr, job.child.stdin):
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
        self.jobs.clear()
        self.sel.close()


# -- meeting the hub ----------------------------------------------------------

def handshake_connector(link, key):
    """We called the hub: answer its HELLO, check its WELCOME."""
    try:
        line, check = wire.connect_as(link.recv_blocking(HANDSHAKE_TIMEOUT), "worker", key)
        link.send(line)
        link.flush_blocking()
        check(link.recv_blocking(HANDSHAKE_TIMEOUT))
    except wire.WireError as e:
        raise Fatal(f"hub {e}" if str(e).startswith("refused") else str(e), e.code) from None


def handshake_acceptor(link, key):
    """The hub called us (--stdio): we say HELLO first."""
    nonce = wire.new_nonce()
    link.send(wire.hello("worker", nonce, auth=wire.AUTH if key is not None else "none"))
    link.flush_blocking()
    msg = link.recv_blocking(HANDSHAKE_TIMEOUT)
    try:
        role, their = wire.check_hello(msg, roles=("hub",))
    except wire.WireError as e:
        link.send(wire.error(e.code, str(e)))
        link.flush_blocking()
        raise Fatal(str(e), EX_PROTOCOL)
    if key is not None and not wire.check_mac(key, role, nonce, their, msg.get("mac")):
        link.send(wire.error(wire.E_NOPERM, "authentication failed"))
        link.flush_blocking()
        raise Fatal("the hub failed authentication", EX_NOPERM)
    mac = wire.mac(key, "worker", their, nonce) if key is not None else None
    link.send(wire.format("WELCOME", wire.VERSION, role="worker", mac=mac))


def parse_hub(text):
    """The hub's address -> (family, address for connect); Fatal(64) if bad."""
    try:
        a = address.parse(text)
    except address.AddressError as e:
        raise Fatal(f"bad hub address: {e}", 64) from None
    if a.family == socket.AF_UNIX:
        return a.family, a.path
    return a.family, (a.host, a.port)


def dial(hub, tls):
    family, addr = parse_hub(hub)
    if family == socket.AF_UNIX:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(HANDSHAKE_TIMEOUT)
        s.connect(addr)
    else:
        s = socket.create_connection(addr, timeout=HANDSHAKE_TIMEOUT)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if tls is not None:
            try:
                s = tls.wrap_socket(s, server_hostname=addr[0])
            except OSError as e:
                s.close()
                refusal = wire.tls_refusal(e)
                if refusal is not None:
                    raise Fatal(f"hub {hub}: {refusal[1]}", refusal[0]) from None
                raise
        else:
            s.sendall(b"\n")       # lets a TLS hub tell us at once that it is one
    s.settimeout(None)
    return s


def serve_connect(hub, key, slots, name, tags, tls=None, once=False, debug=False,
                  lifeline=None):
    """Connect to the hub, serve, reconnect with backoff when it goes away."""
    delay = 0.1
    while True:
        try:
            sock = dial(hub, tls)
        except OSError as e:
            if once:
                raise Fatal(f"cannot connect to {hub}: {e.strerror or e}", EX_UNAVAILABLE)
            log(f"cannot connect to {hub}: {e.strerror or e}; retrying in {delay:.1f}s")
            time.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, 10.0)
            continue
        if tls is not None:
            link = TlsLink(sock)
        else:
            link = Link(sock.fileno(), sock.fileno(), sock)
        try:
            handshake_connector(link, key)
            log(f"connected to {hub} as {name} with {slots} slot{'' if slots == 1 else 's'}")
            delay = 0.1
            w = Worker(link, slots, name, tags, debug, lifeline)
            w.run()
            if w.bye:
                return 0
        except Lost as e:
            log(f"lost the hub: {e}; reconnecting")
        finally:
            link.close()
        if once:
            return EX_UNAVAILABLE
        time.sleep(delay * random.uniform(0.8, 1.2))
        delay = min(delay * 2, 10.0)


class TlsLink(Link):
    """Link over an ssl socket: the SSL layer does the framing of bytes."""

    def __init__(self, sock):
        super().__init__(sock.fileno(), sock.fileno(), sock)

    def read_some(self):
        import ssl
        try:
            data = self.sock.recv(1 << 18)
            while self.sock.pending():
                data += self.sock.recv(self.sock.pending())
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return True
        except OSError as e:
            refusal = wire.tls_refusal(e)
            if refusal is not None and refusal[0] == wire.E_NOPERM:
                raise Fatal(f"hub refused: {refusal[1]}", refusal[0]) from None
            raise Lost(f"read: {e}")
        if not data:
            return False
        self.reader.feed(data)
        return True

    def flush(self):
        import ssl
        while self.out:
            try:
                n = self.sock.send(self.out[:1 << 18])
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return False
            except OSError as e:
                raise Lost(f"write: {e}")
            del self.out[:n]
        return True


def serve_stdio(key, slots, name, tags, debug=False, lifeline=None):
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
    link = Link(rfd, wfd)
    try:
        handshake_acceptor(link, key)
        Worker(link, slots, name, tags, debug, lifeline).run()
    except Lost:
        pass
    return 0


def main_worker(opts, key):
    """Entry from the command line; returns an exit status."""
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    signal.signal(signal.SIGHUP, signal.SIG_IGN) if opts.stdio else None
    if opts.workdir:
        try:
            os.chdir(opts.workdir)
        except OSError as e:
            log(f"cannot use --workdir {opts.workdir}: {e.strerror}")
            return 73
    lifeline = None
    try:
        debug = getattr(opts, "debug", False)
        lifeline = runner.Lifeline(opts.slots)
        if opts.stdio:
            return serve_stdio(key, opts.slots, opts.name, opts.tags, debug, lifeline)
        return serve_connect(opts.connect, key, opts.slots, opts.name, opts.tags,
                             getattr(opts, "tls", None), getattr(opts, "once", False), debug,
                             lifeline)
    except Fatal as e:
        log(str(e))
        return e.code
    finally:
        if lifeline is not None:
            lifeline.close()


# -- the command line: gridd worker, and python3 -m gridtools.worker -----------

def add_options(p):
    """The worker's options, defined once for both ways of starting it."""
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--connect", metavar="HUB", help="connect to the hub at HUB (and reconnect)")
    how.add_argument("--stdio", action="store_true",
                     help="speak the protocol on stdin/stdout, saying HELLO first; exit on EOF")
    p.add_argument("--slots", metavar="N", type=int, default=os.cpu_count() or 1,
                   help="jobs at once (default: the number of cores)")
    p.add_argument("--tag", metavar="K=V", action="append", default=[],
                   help="advertise a tag that jobs may --require (repeatable)")
    p.add_argument("--name", metavar="NAME", help="name shown by the hub (default HOST-PID)")
    p.add_argument("--workdir", metavar="DIR", help="run jobs in DIR")
    p.add_argument("--key-file", metavar="FILE",
                   help="worker key (else $GRID_KEY or $GRID_KEY_FILE)")
    p.add_argument("--tls-ca", metavar="FILE", help="connect with TLS, trusting this CA")
    p.add_argument("--tls-cert", metavar="FILE", help="TLS client certificate (PEM)")
    p.add_argument("--tls-key", metavar="FILE", help="TLS client key (PEM)")


def run(opts, env):
    """Check the options, read the key and certificates, serve.  Raises
    errors.GridError for the caller to report; returns an exit status."""
    opts.tags = wire.parse_pairs(opts.tag, "--tag")
    if not 1 <= opts.slots <= wire.MAX_SLOTS:
        raise errors.UsageError(f"--slots: need 1 to {wire.MAX_SLOTS}, got {opts.slots}")
    if opts.name is None:
        opts.name = f"{socket.gethostname()}-{os.getpid()}"
    if opts.connect:
        try:
            parse_hub(opts.connect)         # a usage error now, not a retry loop
        except Fatal as e:
            raise errors.UsageError(str(e)) from None
    key = keys.key_option(opts.key_file, env, "GRID_KEY")
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
