"""gridsub: queue durable jobs on a hub; collect them now or later.

    gridsub [--hub HUB] [options] COMMAND [ARGS...]    print the new job's id
    gridsub [options] -                                one job per stdin line
    gridsub --wait ...                                 run it there as if here
    gridsub --result ID...                             collect earlier jobs
    gridsub --list [--json]                            the jobs not collected yet
"""

import argparse
import itertools
import os
import re
import signal
import sys

from gridtools.hub import client as hubclient
from gridtools.io.log import logger
from gridtools.local.writer import write_all
from gridtools.proto import errors, wire
from gridtools.cli import common


EPILOG = """\
exit status: without --wait or --result, 0 once every job is queued durably
(--list: once listed).  With them, one job's own status (128+N for signal N,
124 timeout, 75 lost); for several jobs the number that failed (at most 101).
64 usage; 65 no such job, or a line of - longer than 64 KiB; 69 hub
unreachable (also when it is not back within --reconnect SECS); 75 the hub
could not store a job (try again); 76 protocol error; 77 authentication refused; 129, 130, 143 stopped by SIGHUP, SIGINT,
SIGTERM while waiting (the jobs stay on the hub).  See gridsub(1).
"""

RECONNECT = 60.0            # seconds to wait for a lost hub to come back (--reconnect)
MAX_COMMAND = 64 << 10      # bytes in one command (the wire's bodies take 16 MiB)
BATCH_LINES = 1000          # gridsub - submits this many lines at a time,
BATCH_BYTES = 1 << 20       # or fewer once they hold this many bytes


def build_parser():
    p = common.ArgumentParser(prog="gridsub", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              usage="gridsub [options] COMMAND [ARGS...] | - | --result ID... "
                                    "| --list",
                              description="Submit durable jobs to a hub and print their ids.")
    common.add_version(p)
    a = p.add_argument
    a("--hub", metavar="HUB", help=f"hub address (default $GRID_HUB or {common.DEFAULT_HUB})")
    a("--wait", action="store_true",
      help="wait for the job, print its output and exit with its status")
    a("--result", metavar="ID", action="append", default=[],
      help="collect a job submitted earlier, waiting if it has not finished (repeatable)")
    a("--keep", action="store_true", help="leave collected results on the hub")
    a("--list", action="store_true",
      help="list the jobs nobody has collected (queued, running or done), oldest first")
    a("--json", action="store_true", help="with --list: one JSON object per line")
    a("--retries", metavar="N", default="0",
      help=f"run a failed or lost job up to N more times (at most {wire.MAX_RETRIES})")
    a("--timeout", metavar="SECS", help="kill the job's process group after SECS")
    a("--require", metavar="K=V", action="append", default=[],
      help="run only on workers tagged K=V (repeatable)")
    a("--reconnect", metavar="SECS", default=None,
      help="while waiting, if the hub is lost, call it again for up to SECS "
           f"(default {RECONNECT:g}; 0: give up at once)")
    a("-v", "--verbose", action="store_true",
      help="say on stderr each job's id when waiting for it, and each reconnection")
    a("command", nargs=argparse.REMAINDER, metavar="COMMAND", help=argparse.SUPPRESS)
    return p


def parse_options(argv):
    opts = build_parser().parse_args(argv)
    if opts.command and opts.command[0] == "--":
        opts.command = opts.command[1:]
    if opts.list and (opts.command or opts.result or opts.wait):
        raise errors.UsageError("--list takes no COMMAND, --result or --wait")
    if opts.json and not opts.list:
        raise errors.UsageError("--json goes with --list")
    if opts.result and opts.command:
        raise errors.UsageError("give a COMMAND or --result ID, not both")
    if not opts.result and not opts.command and not opts.list:
        raise errors.UsageError("nothing to submit: give a COMMAND, or - to read commands")
    try:
        opts.result = [wire.uint(r, "--result: a job id", 0, wire.MAX_ID) for r in opts.result]
        opts.retries = wire.uint(opts.retries, "--retries", 0, wire.MAX_RETRIES)
        if opts.timeout is not None:
            opts.timeout = wire.seconds(opts.timeout, "--timeout")
        if opts.reconnect is None:
            opts.reconnect = RECONNECT
        elif re.fullmatch(r"0+(\.0*)?", opts.reconnect, re.ASCII):
            opts.reconnect = 0.0
        else:
            opts.reconnect = wire.seconds(opts.reconnect, "--reconnect (or 0)")
    except wire.WireError as e:
        raise errors.UsageError(str(e)) from None
    if opts.command and opts.command != ["-"]:
        size = len(os.fsencode(" ".join(opts.command)))
        if size > MAX_COMMAND:
            raise errors.UsageError(f"COMMAND: at most {MAX_COMMAND} bytes, got {size}")
    opts.reqs = wire.parse_pairs(opts.require, "--require")
    opts.tty = False            # is stderr a terminal?  (main looks)
    return opts


def read_batches(f, max_len=MAX_COMMAND, lines=BATCH_LINES, size=BATCH_BYTES):
    """Commands from the binary file f, one per non-blank line, in lists
    of at most `lines` commands or about `size` bytes: memory holds one
    batch, however long the input.  A line longer than max_len bytes raises
    DataError naming it, once every command before it has been yielded."""
    batch, held, number = [], 0, 0
    while True:
        line = f.readline(max_len + 1)
        if not line:
            break
        number += 1
        if line.endswith(b"\n"):
            line = line[:-1]
        elif len(line) > max_len:
            if batch:
                yield batch
            raise errors.DataError(f"standard input, line {number}: a command longer than "
                                   f"{max_len} bytes (the most one job takes)")
        if not line.strip():
            continue
        batch.append(os.fsdecode(line))
        held += len(line)
        if len(batch) >= lines or held >= size:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


def status_of(record):
    """gridsub's exit status for a job's result (a hubclient.Done)."""
    return hubclient.exit_status(record)


say = logger("gridsub")


class Stopped(Exception):
    """A signal that stops the wait (the jobs stay on the hub)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def stop(signum, _frame):
    raise Stopped(signum)


class Link:
    """gridsub's connection to its hub.  While waiting for jobs, a lost
    connection is dialled again (--reconnect); the ids of the jobs waited
    for are said on stderr when the wait is interrupted, so that they can
    be collected later even by a script that never saw them."""

    def __init__(self, opts, env):
        self.opts = opts
        self.env = env
        self.addr = common.hub_address(opts.hub, env)
        self.client = hubclient.Client(self.addr, env)
        self.unsaid = {}            # ids waited for, not said on stderr yet (ordered)

    def close(self):
        self.client.close()

    def waiting_for(self, did):
        """A job just submitted that we are to wait for."""
        if self.opts.verbose or self.opts.tty:
            say(f"job {did} queued")
        else:
            self.unsaid[did] = None

    def collected(self, did):
        self.unsaid.pop(did, None)

    def tell(self):
        """The wait is interrupted: say the ids not said yet."""
        for did in self.unsaid:
            say(f"job {did} queued")
        self.unsaid = {}

    def lost(self, err, did):
        """The connection broke while waiting for job did: dial again."""
        self.tell()
        self.client.close()
        if not self.opts.reconnect:
            raise err
        say(f"lost the hub while waiting for job {did} ({err}); "
            f"calling it again for up to {self.opts.reconnect:g}s")
        self.client = hubclient.redial(self.addr, self.env, self.opts.reconnect)
        if self.opts.verbose:
            say(f"reconnected to {self.addr}")

    def collect(self, did):
        """Write job did's output here, once, across reconnections; then
        delete its result (unless --keep).  Its exit status."""
        replay = hubclient.Replay(write_all)
        record = None
        forgetting = False
        while True:
            try:
                if record is None:
                    record = hubclient.follow(self.client, did, replay)
                    if replay.end():
                        say(f"job {did} ran again after the hub restarted and wrote other "
                            f"output than its interrupted try had: the output above is "
                            f"not one try's")
                if not self.opts.keep:
                    try:
                        hubclient.forget(self.client, did)
                    except errors.DataError:
                        if not forgetting:
                            raise
                        # Our FORGET sent before the connection broke did it.
                self.collected(did)
                if record.note:
                    say(f"job {did}: {record.note}")
                return status_of(record)
            except errors.UnavailableError as e:
                self.lost(e, did)
                if record is None:
                    replay.again()
                else:
                    forgetting = True


def _main(argv):
    opts = parse_options(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ)
    opts.tty = os.isatty(2)
    if opts.list:
        return list_results(opts, env)
    if opts.command == ["-"]:
        batches = read_batches(sys.stdin.buffer)
        first = next(batches, None)
        if first is None:
            return 0                # nothing to submit: no need for a hub
        batches = itertools.chain([first], batches)
    elif opts.command:
        batches = [[" ".join(opts.command)]]
    else:
        batches = []
    old = {}
    if opts.wait or opts.result:
        for s in (signal.SIGTERM, signal.SIGHUP):
            old[s] = signal.signal(s, stop)
    try:
        return work(opts, env, batches)
    except Stopped as e:
        return 128 + e.signum
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def list_results(opts, env):
    """--list: the jobs nobody has collected, as text or JSON lines."""
    import json
    from gridtools.cli.gridd import format_results
    client = hubclient.Client(common.hub_address(opts.hub, env), env)
    try:
        rows = hubclient.results(client)
    finally:
        client.close()
    if opts.json:
        sys.stdout.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    else:
        sys.stdout.write(format_results(rows) + "\n")
    return 0


def work(opts, env, batches):
    link = Link(opts, env)
    try:
        ids = list(opts.result)
        for commands in batches:
            for did in hubclient.submit(link.client, commands, opts.reqs, opts.retries,
                                        opts.timeout):
                ids.append(did)
                if opts.wait:
                    link.waiting_for(did)
                else:
                    sys.stdout.write(f"{did}\n")
            sys.stdout.flush()      # ids out as their jobs are stored: a later failure keeps them
        if not opts.wait and not opts.result:
            return 0
        statuses = [link.collect(did) for did in ids]
    except BaseException:
        link.tell()
        raise
    finally:
        link.close()
    if len(statuses) == 1:
        return statuses[0]
    return min(sum(1 for s in statuses if s), 101)


def main(argv=None):
    return common.run("gridsub", _main, argv)
