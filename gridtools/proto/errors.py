"""The exit-code contract and the error types every command reports through.

Written once here and in man/gridtools.7; commands never invent codes of
their own.  Pure and stdlib-only: it ships with the worker.  Job-failure codes (1-101 for gridmap, the job's own status for
gridsub --wait) are each command's business and are documented with it.
"""

OK = 0
USAGE = 64         # bad arguments
DATAERR = 65       # bad input data
NOINPUT = 66       # input file missing or unreadable
UNAVAILABLE = 69   # peer or service down
SOFTWARE = 70      # internal error: a bug
OSERR = 71         # the operating system refused (fork, pipe, ...)
CANTCREAT = 73     # cannot create an output file
IOERR = 74         # read or write error
TEMPFAIL = 75      # try again later (lock busy, hub restarting)
PROTOCOL = 76      # the peer broke the protocol
NOPERM = 77        # authentication or permission refused
CONFIG = 78        # bad configuration
INTERRUPTED = 130  # SIGINT
BROKEN_PIPE = 141  # our reader went away (as a SIGPIPE death would report)
TERMINATED = 143   # SIGTERM
TIMED_OUT = 124    # a job killed by its timeout, as timeout(1) reports it

# A finished job's outcome, as the wire, the journal, the joblog and --json
# name it.
OUTCOME_OK, FAILED, SIGNALED, TIMEOUT, CANCELLED, LOST = OUTCOMES = (
    "ok", "failed", "signal", "timeout", "cancelled", "lost")


class GridError(Exception):
    """An error with a one-line message and the exit code it maps to."""

    code = SOFTWARE

    def __init__(self, message, code=None):
        super().__init__(message)
        if code is not None:
            self.code = code


class UsageError(GridError):
    code = USAGE


class DataError(GridError):
    code = DATAERR


class NoInputError(GridError):
    code = NOINPUT


class UnavailableError(GridError):
    code = UNAVAILABLE


class ProtocolError(GridError):
    code = PROTOCOL


class AuthError(GridError):
    code = NOPERM
