"""What every command shares: the argument parser that exits 64, and the
wrapper that turns errors, Ctrl-C and a closed stdout into exit codes."""

import argparse
import os
import sys

from gridtools import __version__, errors


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error exits 64 (EX_USAGE) instead of 2."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(errors.USAGE, f"{self.prog}: error: {message}\n")


def add_version(parser):
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {__version__}")


def run(prog, work, argv):
    """Call work(argv) and map whatever escapes it to an exit code.

    GridError prints `prog: error: message`; tracebacks only when GRID_DEBUG
    is set.  A reader that went away (`| head`) exits 141 without noise.
    """
    debug = bool(os.environ.get("GRID_DEBUG"))
    try:
        code = work(argv)
        sys.stdout.flush()
        return code
    except errors.GridError as e:
        if debug:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.code
    except BrokenPipeError:
        quiet_stdout()
        return errors.BROKEN_PIPE
    except KeyboardInterrupt:
        return errors.INTERRUPTED


def quiet_stdout():
    """Point fd 1 at /dev/null so the interpreter's final flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except OSError:
        pass
