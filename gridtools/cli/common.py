"""What every command shares: the argument parser that exits 64, and the
wrapper that turns errors, Ctrl-C and a closed stdout into exit codes."""

import argparse
import os
import sys

from gridtools import __version__
from gridtools.proto import errors


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error exits 64 (EX_USAGE) instead of 2."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(errors.USAGE, f"{self.prog}: error: {message}\n")


class OptionError(errors.UsageError):
    """A bad option value found once argparse has parsed the line (a
    negative --timeout, a -j that is not a count).  run() prints it as
    argparse prints its own errors, after the usage line, but returns 64
    instead of exiting, so a test can call main() in process."""

    def __init__(self, message, usage):
        super().__init__(message)
        self.usage = usage


def add_version(parser):
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {__version__}")


DEFAULT_HUB = "127.0.0.1:7711"


def hub_address(given, env):
    """The hub to call: --hub, else $GRID_HUB, else the default."""
    return given or env.get("GRID_HUB") or DEFAULT_HUB


def raise_fd_limit():
    """Every connection and job pipe is a descriptor: take all the hard
    limit allows.  The soft limit now in force."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def run(prog, work, argv):
    """Call work(argv) and map whatever escapes it to an exit code.

    GridError prints `prog: error: message` (an OptionError after its
    usage line) and exits with its code; any other exception is a bug and
    exits 70.  GRID_DEBUG adds the traceback but keeps the exit code.  A
    reader that went away (`| head`) exits 141 without noise.
    """
    debug = bool(os.environ.get("GRID_DEBUG"))
    try:
        code = work(argv)
        sys.stdout.flush()
        return code
    except errors.GridError as e:
        _report(prog, f"error: {e}", debug, getattr(e, "usage", ""))
        return e.code
    except BrokenPipeError:
        quiet_stdout()
        return errors.BROKEN_PIPE
    except KeyboardInterrupt:
        return errors.INTERRUPTED
    except OSError as e:
        # Trouble with our own stdout/stderr or files (a full disk, a bad
        # descriptor): say which, with the I/O exit code.
        where = f" {e.filename}" if e.filename else ""
        _report(prog, f"error: I/O error{where}: {e.strerror or e}", debug)
        return errors.IOERR
    except Exception as e:  # noqa: BLE001 - the last line of defence
        _report(prog, f"internal error: {type(e).__name__}: {e}", debug)
        return errors.SOFTWARE


def _report(prog, message, debug, usage=""):
    if debug:
        import traceback
        traceback.print_exc()
    try:
        print(f"{usage}{prog}: {message}", file=sys.stderr)
    except OSError:
        pass


def quiet_stdout():
    """Point fd 1 at /dev/null so the interpreter's final flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except OSError:
        pass
