"""Starting a worker where nothing is installed but python3: the stub that
`ssh HOST python3 -c STUB` runs, the source it is sent (every module of
serve.MANIFEST, imported from memory there), and the sending side, which
skips what the remote shell prints until the stub's banner and says where
a failed start failed.

The channel, in order:

    remote: <whatever shell rc files print>       (skipped, at most NOISE bytes)
    hub:    <N>\\n <N bytes: zlib of stage two>     (sent at once, not waited for)
    remote: \\0gridtools-boot 1\\n                   (the banner: stage one runs)
    remote: HELLO 1 role=worker ...                (stage two runs gridd worker --stdio)

Stage one (STUB) checks the python version, writes the banner and execs
stage two from stdin; stage two (loader, below, shipped as its own source)
puts the shipped modules on sys.meta_path and runs the worker.  Nothing is
written on the remote host: no cache, no temporary file.  This module is
the hub's side and is not itself shipped.
"""

import hashlib
import importlib.util
import inspect
import os
import shlex
import signal
import socket
import subprocess
import zlib

from gridtools.proto import errors
from gridtools.worker import serve

BANNER = b"\0gridtools-boot 1\n"
NOISE = 64 << 10            # bytes of shell-rc output skipped before the banner
TOO_OLD = 90                # stage one: python older than MIN_PYTHON
BROKEN = 91                 # stage two: the shipped source would not load
MIN_PYTHON = (3, 10)
SSH = "ssh -T -o BatchMode=yes -o ServerAliveInterval=15 -o ServerAliveCountMax=3"
PYTHON = "python3"

# Stage one, on the remote command line: one line (csh and tcsh reject a
# newline inside quotes), no f-strings (an old python3 must get as far as
# saying it is too old).  It reads exactly the announced length, so the
# protocol bytes that follow are still in the pipe for the worker.
STUB = ("import os,sys,zlib;"
        "sys.version_info<%r and(os.write(2,('gridtools: python %%s is too old, %d.%d or later "
        "is needed\\n'%%sys.version.split()[0]).encode()),os._exit(%d));"
        "os.write(1,%r);"
        "i=sys.stdin.buffer;exec(zlib.decompress(i.read(int(i.readline()))))"
        % (MIN_PYTHON, *MIN_PYTHON, TOO_OLD, BANNER))


def loader(sources, argv, broken):
    """Stage two, run on the remote host from the source the hub sent:
    serve the shipped modules from memory, ahead of anything on sys.path,
    then run the worker with argv and exit with its status."""
    import importlib.abc
    import importlib.util
    import os
    import sys

    class Shipped(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
        def find_spec(self, name, path=None, target=None):
            if name not in sources:
                return None
            return importlib.util.spec_from_loader(name, self, origin="shipped",
                                                   is_package=sources[name][0])

        def get_source(self, name):         # tracebacks show the shipped lines
            return sources[name][1]

        def exec_module(self, module):
            name = module.__name__
            where = name.replace(".", "/") + ("/__init__.py" if sources[name][0] else ".py")
            exec(compile(sources[name][1], "<shipped>/" + where, "exec"), module.__dict__)

    sys.meta_path.insert(0, Shipped())
    try:
        from gridtools.worker import serve
    except Exception as e:  # noqa: BLE001 - said, with the exit status that means "bootstrap"
        os.write(2, ("gridtools: the shipped worker does not load here: %s: %s\n"
                     % (type(e).__name__, e)).encode())
        os._exit(broken)
    sys.exit(serve.main(argv))


def sources():
    """{module: (is_package, source)} for every module of serve.MANIFEST,
    read as this host's Python finds them."""
    out = {}
    for name in serve.MANIFEST:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            raise errors.GridError(f"cannot find {name} to ship", errors.SOFTWARE)
        out[name] = (spec.submodule_search_locations is not None, spec.loader.get_source(name))
    return out


def stage_two(argv):
    """The source of stage two: the loader, the shipped modules, argv."""
    return (inspect.getsource(loader)
            + f"\nloader({sources()!r}, {list(argv)!r}, {BROKEN})\n")


def payload(argv):
    """What the hub writes on the channel: a length line and stage two,
    compressed.  (bytes, its SHA-256 in hex, for the log.)"""
    z = zlib.compress(stage_two(argv).encode(), 9)
    return b"%d\n" % len(z) + z, hashlib.sha256(z).hexdigest()


def remote_command(python=PYTHON):
    """The command line the remote shell runs.  ssh joins its arguments with
    spaces for the remote shell to split again, so this is one string,
    quoted.  -I -S: no site, no user or $PYTHON* paths (nothing there can
    shadow the shipped modules) and a faster start."""
    return shlex.join([*shlex.split(python), "-I", "-S", "-c", STUB])


def check_host(host):
    """user@host or host, as ssh takes it; never something ssh reads as an option."""
    if not host or host.startswith("-") or any(c.isspace() or not c.isprintable() for c in host):
        raise errors.UsageError(f"--ssh-host: not a host: {host!r}")
    return host


def ssh_argv(host, ssh=SSH, python=PYTHON):
    """The argv that starts stage one on host (ssh: the command, as
    GNU parallel's --ssh; split as the shell would)."""
    cmd = shlex.split(ssh)
    if not cmd:
        raise errors.UsageError("--ssh: empty command")
    return [*cmd, check_host(host), remote_command(python)]


def worker_argv(name=None, slots=None):
    """The worker's options on the remote host (they travel in the payload,
    not on the command line, so ps there shows only the stub)."""
    argv = ["--stdio"]
    if name:
        argv += ["--name", name]
    if slots:
        argv += ["--slots", str(slots)]
    return argv


class Banner:
    """Bytes from the channel until the banner: feed() returns None while
    still waiting, then what came after the banner (the worker's first
    bytes).  More than NOISE bytes before it is a BootError."""

    def __init__(self):
        self.tail = b""
        self.skipped = 0
        self.noise = b""            # the first bytes skipped, to quote

    def feed(self, data):
        buf = self.tail + data
        at = buf.find(BANNER)
        if at >= 0:
            self.skipped += at
            return buf[at + len(BANNER):]
        keep = len(BANNER) - 1
        self.skipped += max(0, len(buf) - keep)
        if len(self.noise) < 200:
            self.noise = (self.noise + data)[:200]
        self.tail = buf[-keep:]
        if self.skipped > NOISE:
            raise BootError(f"no bootstrap banner in the first {NOISE} bytes of output "
                            f"(they begin {self.noise[:80]!r})", errors.PROTOCOL)
        return None


class BootError(errors.GridError):
    """A start that failed, saying where."""


def explain(status, stage, host):
    """Why the start of a worker on host ended, from ssh's exit status (as
    subprocess gives it: negative for a signal) and the stage reached
    ("ssh": no banner yet, "boot": banner but no HELLO, "worker": it spoke).
    Returns (exit code for a caller, sentence)."""
    if status is not None and status < 0:
        return errors.UNAVAILABLE, f"ssh to {host} was killed by signal {-status}"
    if stage == "ssh":
        if status == 255:
            return errors.UNAVAILABLE, (f"ssh to {host} failed (exit 255: unreachable, refused, "
                                        f"or authentication failed)")
        if status == 127:
            return errors.UNAVAILABLE, f"no python3 on {host} (exit 127: command not found)"
        if status == 126:
            return errors.UNAVAILABLE, f"python3 on {host} cannot be run (exit 126)"
        if status == TOO_OLD:
            return errors.UNAVAILABLE, (f"python3 on {host} is too old "
                                        f"({MIN_PYTHON[0]}.{MIN_PYTHON[1]} or later is needed)")
        return errors.UNAVAILABLE, (f"the remote command on {host} ended (exit {status}) "
                                    f"before the bootstrap banner")
    if stage == "boot":
        if status == 0:
            return errors.PROTOCOL, f"the bootstrap on {host} ended without a word (exit 0)"
        return errors.SOFTWARE, (f"the bootstrap on {host} failed (exit {status}): the "
                                 f"shipped worker did not start")
    if status == 0:
        return 0, f"the worker on {host} exited (status 0)"
    return errors.UNAVAILABLE, f"the worker on {host} exited (status {status})"


def spawn(host, ssh=SSH, python=PYTHON, stderr=subprocess.PIPE):
    """Start stage one on host with one end of a socketpair as its stdin
    and stdout.  Returns (Popen, our end, non-blocking).  ssh runs in a
    session of its own: a ^C meant for the caller does not cut its workers."""
    ours, theirs = socket.socketpair()
    try:
        proc = subprocess.Popen(ssh_argv(host, ssh, python), stdin=theirs, stdout=theirs,
                                stderr=stderr, start_new_session=True)
    except OSError as e:
        ours.close()
        raise BootError(f"cannot run {shlex.split(ssh)[0]}: {e.strerror}",
                        errors.UNAVAILABLE) from None
    finally:
        theirs.close()
    ours.setblocking(False)
    return proc, ours


def stop(proc):
    """SIGTERM to a launcher still running (its session: ssh, or a local
    stand-in and its children); never raises."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except OSError:
            pass
