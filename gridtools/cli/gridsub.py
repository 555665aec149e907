"""gridsub: queue durable jobs on a hub; collect them now or later.

    gridsub [--hub HUB] [options] COMMAND [ARGS...]    print the new job's id
    gridsub [options] -                                one job per stdin line
    gridsub --wait ...                                 run it there as if here
    gridsub --result ID...                             collect earlier jobs
"""

import argparse
import os
import sys

from gridtools import errors, output, wire
from gridtools.cli import common


EPILOG = """\
exit status: without --wait or --result, 0 once every job is queued durably.
With them, one job's own status (128+N for signal N, 124 timeout, 75 lost);
for several jobs the number that failed (at most 101).  64 usage, 65 no such
job, 69 hub unreachable, 76 protocol error, 77 authentication refused.
See gridsub(1).
"""

LOST_STATUS = errors.TEMPFAIL
TIMEOUT_STATUS = 124


def build_parser():
    p = common.ArgumentParser(prog="gridsub", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              usage="gridsub [options] COMMAND [ARGS...] | - | --result ID...",
                              description="Submit durable jobs to a hub and print their ids.")
    common.add_version(p)
    a = p.add_argument
    a("--hub", metavar="HUB", help=f"hub address (default $GRID_HUB or {common.DEFAULT_HUB})")
    a("--wait", action="store_true",
      help="wait for the job, print its output and exit with its status")
    a("--result", metavar="ID", action="append", default=[],
      help="collect a job submitted earlier, waiting if it has not finished (repeatable)")
    a("--keep", action="store_true", help="leave collected results on the hub")
    a("--retries", metavar="N", type=int, default=0,
      help="run a failed or lost job up to N more times")
    a("--timeout", metavar="SECS", type=float, help="kill the job's process group after SECS")
    a("--require", metavar="K=V", action="append", default=[],
      help="run only on workers tagged K=V (repeatable)")
    a("command", nargs=argparse.REMAINDER, metavar="COMMAND", help=argparse.SUPPRESS)
    return p


def parse_options(argv):
    opts = build_parser().parse_args(argv)
    if opts.command and opts.command[0] == "--":
        opts.command = opts.command[1:]
    if opts.result and opts.command:
        raise errors.UsageError("give a COMMAND or --result ID, not both")
    if not opts.result and not opts.command:
        raise errors.UsageError("nothing to submit: give a COMMAND, or - to read commands")
    try:
        opts.result = [wire.uint(r, "--result: a job id", 0, wire.MAX_ID) for r in opts.result]
    except wire.WireError as e:
        raise errors.UsageError(str(e)) from None
    if opts.retries < 0:
        raise errors.UsageError("--retries: need 0 or more")
    if opts.timeout is not None and opts.timeout <= 0:
        raise errors.UsageError("--timeout: need a positive number of seconds")
    opts.reqs = common.parse_pairs(opts.require, "--require")
    return opts


def read_commands(fd=0):
    """One command per non-empty stdin line."""
    data = bytearray()
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        data += chunk
    return [line for line in os.fsdecode(bytes(data)).split("\n") if line.strip()]


def status_of(record):
    """gridsub's exit status for a job's result (hubclient.done_record)."""
    outcome = record["outcome"]
    if outcome == "lost":
        return LOST_STATUS
    if outcome == "timeout":
        return TIMEOUT_STATUS
    if record["sig"] is not None:
        return 128 + record["sig"]
    if record["exit"] is None:
        return 128 + 15 if outcome == "cancelled" else 1
    return record["exit"]


def write_output(fd, data):
    output.write_all(fd, data)


def collect(client, did, keep):
    """Stream one job's stored output here; its exit status."""
    from gridtools import hubclient
    record = hubclient.follow(client, did, write_output)
    if not keep:
        hubclient.forget(client, did)
    return status_of(record)


def _main(argv):
    opts = parse_options(sys.argv[1:] if argv is None else argv)
    from gridtools import hubclient
    env = dict(os.environ)
    hub = common.hub_address(opts.hub, env)
    if opts.command == ["-"]:
        commands = read_commands()
        if not commands:
            return 0
    elif opts.command:
        commands = [" ".join(opts.command)]
    else:
        commands = []
    client = hubclient.Client(hub, env)
    try:
        ids = opts.result
        if commands:
            ids = list(hubclient.submit(client, commands, opts.reqs, opts.retries,
                                        opts.timeout))
            if not opts.wait:
                sys.stdout.write("".join(f"{i}\n" for i in ids))
                return 0
        sys.stdout.flush()
        statuses = [collect(client, did, opts.keep) for did in ids]
    finally:
        client.close()
    if len(statuses) == 1:
        return statuses[0]
    return min(sum(1 for s in statuses if s), 101)


def main(argv=None):
    return common.run("gridsub", _main, argv)
