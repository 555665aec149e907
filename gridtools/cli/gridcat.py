"""gridcat: the netcat of the grid — read and write a hub's streams, one
message a line on stdin and stdout.

    gridcat pub TOPIC        each stdin line a message to the topic
    gridcat sub TOPIC        the topic's messages, in its one order
    gridcat put QUEUE        each stdin line a message to the queue
    gridcat take QUEUE       messages taken off the queue, each by one taker
    gridcat read QUEUE       the oldest message, left in the queue (Linda rd)
    gridcat join ROOM        a member of ROOM: its views and everyone's lines, one order
    gridcat job ID           a durable job's output, live, then its status
    gridcat events           the hub's events
    gridcat ls               topics, queues and rooms
"""

import argparse
import datetime
import json
import os
import re
import select
import socket
import sys

from gridtools.cli import common
from gridtools.hub import client as hubclient
from gridtools.proto import frames
from gridtools.io.log import logger
from gridtools.local.writer import write_all
from gridtools.proto import errors, units, wire

EPILOG = """\
exit status: 0 success; 1 nothing was written (with -e, --timeout, or read
finding no message); 3 messages were lost (the subscriber fell behind the
topic's retention; stderr says how many); gridcat job: the job's own
status (128+N for signal N, 124 timeout, 75 lost); 64 usage; 65 bad input
(a message over about 16 MiB, 1 MiB in a room, or badly framed) or no
such job; 69 hub unreachable; 75 the hub could not store the messages, or the name is in
the room already (try again); 76 protocol error; 77 refused; 141 stdout
closed; gridcat join: 3 removed from the room for reading too slowly.
See gridcat(1).
"""

NOTHING = 1                 # nothing was written
LOST = 3                    # messages were lost to retention
MAX_MESSAGE = frames.MAX_MESSAGE    # bytes in one message: a body's most, less its framing
BATCH_BYTES = 1 << 20       # stdin is published in batches of about this many bytes
WINDOW = 64                 # messages a taker holds unacknowledged (--window)
ROOM_AHEAD = 1 << 20        # bytes a member says before they come back to it

say = logger("gridcat")


def build_parser():
    p = common.ArgumentParser(prog="gridcat", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              description="Read and write a hub's streams: topics, queues, "
                                          "a job's output, the hub's events.")
    common.add_version(p)
    sub = p.add_subparsers(dest="mode", metavar="pub|sub|put|take|read|join|job|events|ls")
    sub.required = True

    def mode(name, helptext, what=None):
        m = sub.add_parser(name, help=helptext, description=helptext)
        m.add_argument("--hub", metavar="HUB",
                       help=f"hub address (default $GRID_HUB or {common.DEFAULT_HUB})")
        if what:
            m.add_argument("stream", metavar=what)
        return m

    def framing(m):
        g = m.add_mutually_exclusive_group()
        g.add_argument("-0", "--null", action="store_true",
                       help="messages end with NUL instead of newline")
        g.add_argument("--framed", action="store_true",
                       help="messages are LENGTH:BYTES and a newline, on stdin and stdout "
                            "(any bytes pass)")

    def following(m, start):
        m.add_argument("--from", dest="start", metavar="WHERE", default=start,
                       help="beginning, end, OFFSET, -N (the last N) or TIME "
                            f"(ISO 8601 or @EPOCH); default {start}")
        m.add_argument("-e", "--exit-at-end", action="store_true",
                       help="stop when nothing more is retained instead of following")
        m.add_argument("-n", "--count", metavar="COUNT", help="stop after COUNT messages")
        m.add_argument("--timeout", metavar="SECS",
                       help="stop when no message came for SECS")
        m.add_argument("--json", action="store_true", help="one JSON object a message")

    m = mode("pub", "publish each line of stdin to TOPIC", "TOPIC")
    framing(m)
    m.add_argument("--durable", action="store_true",
                   help="keep the topic in the hub's journal (it survives a restart)")
    m.add_argument("--keep", metavar="N", help="retain the last N messages")
    m.add_argument("--keep-bytes", metavar="SIZE", help="retain at most SIZE bytes (K, M, G)")
    m.add_argument("--keep-age", metavar="SECS", help="retain messages for SECS")

    m = mode("sub", "print TOPIC's messages, one a line, in the topic's order", "TOPIC")
    framing(m)
    following(m, "end")
    m.add_argument("--name", dest="sub_name", metavar="NAME",
                   help="a named subscription: the hub keeps its offset, and it goes on "
                        "where it left off")

    m = mode("put", "put each line of stdin in QUEUE", "QUEUE")
    framing(m)

    m = mode("take", "take messages off QUEUE, each by one taker", "QUEUE")
    framing(m)
    m.add_argument("-n", "--count", metavar="COUNT", help="stop after COUNT messages")
    m.add_argument("-e", "--exit-at-end", action="store_true",
                   help="stop when nothing more is queued instead of waiting")
    m.add_argument("--match", metavar="REGEX", help="take only messages REGEX matches")
    m.add_argument("--timeout", metavar="SECS", help="stop when no message came for SECS")
    m.add_argument("--window", metavar="N", default=str(WINDOW),
                   help=f"hold at most N messages unacknowledged (default {WINDOW})")
    m.add_argument("--json", action="store_true", help="one JSON object a message")

    m = mode("read", "print QUEUE's oldest message without taking it", "QUEUE")
    framing(m)
    m.add_argument("--match", metavar="REGEX", help="the oldest message REGEX matches")
    m.add_argument("-e", "--exit-at-end", action="store_true",
                   help="do not wait for a message when there is none")
    m.add_argument("--timeout", metavar="SECS", help="wait at most SECS for one")
    m.add_argument("--json", action="store_true", help="one JSON object")

    m = mode("join", "join ROOM: say each line of stdin, print the room's views and "
                     "everyone's lines in its one order", "ROOM")
    framing(m)
    m.add_argument("--name", dest="member", metavar="NAME",
                   help="this member's name in the room (default HOST.PID)")
    m.add_argument("-e", "--exit-at-end", action="store_true",
                   help="leave the room once stdin ends and its lines came back")
    m.add_argument("-n", "--count", metavar="COUNT", help="stop after COUNT messages")
    m.add_argument("--timeout", metavar="SECS",
                   help="stop when nothing happened in the room for SECS")
    m.add_argument("--json", action="store_true",
                   help="one JSON object a message or view")

    mode("job", "follow a durable job's output, then exit with its status", "ID")

    m = mode("events", "print the hub's events, one a line")
    following(m, "end")

    m = mode("ls", "list the hub's topics, queues and rooms")
    m.add_argument("--json", action="store_true",
                   help="one JSON object a topic, queue or room")
    return p


def parse_options(argv):
    opts = build_parser().parse_args(argv)
    try:
        for key in ("count", "window", "keep"):
            v = getattr(opts, key, None)
            if v is not None:
                setattr(opts, key, wire.uint(v, f"--{key}", 1, wire.MAX_COUNT))
        if getattr(opts, "keep_bytes", None) is not None:
            try:
                opts.keep_bytes = units.parse_size(opts.keep_bytes)
            except ValueError as e:
                raise errors.UsageError(f"--keep-bytes: {e}") from None
            if opts.keep_bytes > 1 << 30:
                raise errors.UsageError("--keep-bytes: at most 1G")
        for key in ("timeout", "keep_age"):
            v = getattr(opts, key, None)
            if v is not None:
                setattr(opts, key, wire.seconds(v, "--" + key.replace("_", "-")))
        if opts.mode == "job":
            opts.stream = wire.uint(opts.stream, "ID: a job id", 0, wire.MAX_ID)
    except wire.WireError as e:
        raise errors.UsageError(str(e)) from None
    if getattr(opts, "window", None) is not None and opts.window > 10000:
        raise errors.UsageError("--window: at most 10000")
    if getattr(opts, "match", None) is not None:
        try:
            re.compile(os.fsencode(opts.match))
        except re.error as e:
            raise errors.UsageError(f"--match: not a regular expression: {e}") from None
    if opts.mode == "join":
        if opts.member is None:
            opts.member = default_member()
        for what, name in (("ROOM", opts.stream), ("--name", opts.member)):
            if not wire.NAME.match(name):
                raise errors.UsageError(f"{what}: {name[:64]!r}: {wire.NAME_RULE}")
    if getattr(opts, "start", None) is not None:
        opts.start, opts.since = parse_from(opts.start)
    opts.framing = Framed() if getattr(opts, "framed", False) else \
        Lines(b"\0" if getattr(opts, "null", False) else b"\n")
    return opts


def default_member():
    """HOST.PID, HOST the first label of the host name, as a name may be."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname().split(".")[0]).strip("-_")
    pid = str(os.getpid())
    return f"{host[:63 - len(pid)] or 'host'}.{pid}"


def parse_from(text):
    """--from as (start, since): start for SUB from=, since for since=."""
    if text in ("beginning", "begin", "end"):
        return text, None
    if re.fullmatch(r"-?[0-9]{1,19}", text, re.ASCII):
        return text, None
    if re.fullmatch(r"@[0-9]{1,10}(\.[0-9]{1,9})?", text, re.ASCII):
        return None, text[1:]
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise errors.UsageError(f"--from: expected beginning, end, OFFSET, -N, an ISO 8601 "
                                f"time or @EPOCH, got {text!r}") from None
    return None, f"{max(0.0, when.timestamp()):.3f}"


# -- from stdin ------------------------------------------------------------------

class Lines:
    """Messages that end with sep (a newline, or NUL with -0); the last
    may lack it."""

    def __init__(self, sep):
        self.sep = sep

    def split(self, buf, most):
        """(whole messages, the rest, problem or None), as frames.split_stream."""
        parts = buf.split(self.sep)
        rest = parts.pop()
        if len(rest) > most or (parts and max(map(len, parts)) > most):
            parts.append(rest)
            first = next(i for i, m in enumerate(parts) if len(m) > most)
            return parts[:first], b"", f"a message longer than {most} bytes"
        return parts, rest, None

    def end(self, rest):
        return [rest] if rest else []

    def record(self, msg):
        return msg + self.sep


class Framed:
    """Messages as LENGTH:BYTES and a newline (--framed): the form of the
    wire's message lists (gridtools.proto.frames), so any bytes pass."""

    def split(self, buf, most):
        return frames.split_stream(buf, most)

    def end(self, rest):
        if rest:
            raise errors.DataError(f"standard input ends inside a message ({len(rest)} bytes "
                                   f"of LENGTH:BYTES and a newline)")
        return []

    def record(self, msg):
        return b"%d:%s\n" % (len(msg), msg)


def batches(fd, framing, limit=BATCH_BYTES, most=MAX_MESSAGE):
    """Lists of messages from fd as they arrive: a batch is what one read
    brought, so a slow writer's lines go out at once.  DataError for a
    message over most bytes (or not framed), after every message before it."""
    rest = b""
    while True:
        data = os.read(fd, limit)
        if not data:
            break
        parts, rest, problem = framing.split(rest + data, most)
        for i in range(0, len(parts), frames.MAX_BATCH):
            yield parts[i:i + frames.MAX_BATCH]
        if problem:
            raise errors.DataError(f"standard input: {problem}")
    last = framing.end(rest)
    if last:
        yield last


def send_stdin(sender, framing):
    for msgs in batches(0, framing):
        sender.send(msgs)
    sender.finish()
    return 0


# -- to stdout ---------------------------------------------------------------------

class Out:
    """Messages to stdout, as lines (or -0, or --json records)."""

    def __init__(self, opts, what):
        self.record = opts.framing.record
        self.json = getattr(opts, "json", False)
        self.what = what
        self.written = 0
        self.buf = []

    def add(self, msg, **where):
        if self.json:
            if self.what == "event":
                rec = hubclient.parse_event(msg)
            else:
                rec = dict(where, message=msg.decode("utf-8", "backslashreplace"))
            self.buf.append(json.dumps(rec, sort_keys=True).encode() + b"\n")
        else:
            self.buf.append(self.record(msg))
        self.written += 1

    def flush(self):
        """Everything added is written: after this, it may be acknowledged."""
        if self.buf:
            write_all(1, b"".join(self.buf))
            self.buf = []


def follow(opts, client, topic):
    """sub and events: print until -n, -e, --timeout or the hub goes."""
    sub = hubclient.Subscription(client, topic, opts.start or "end", opts.since,
                                 getattr(opts, "sub_name", None), opts.exit_at_end)
    out = Out(opts, "event" if topic == hubclient.EVENTS else "topic")
    left = opts.count
    lost = 0
    unseen = None               # the offset after the last message added, not yet seen
    while left is None or left > 0:
        item = sub.next(opts.timeout if unseen is None else 0)
        if item is None:
            if unseen is not None:
                # Nothing more has arrived: write, then move the named offset.
                out.flush()
                sub.seen(unseen)
                unseen = None
                continue
            break
        if item.kind == "end":
            break
        if item.kind == "lost":
            lost += item.n
            say(f"{item.n} message{'' if item.n == 1 else 's'} of {topic} lost: retention "
                f"overtook this subscriber (going on at offset {item.at})")
            continue
        msgs = item.data if left is None else item.data[:left]
        for i, m in enumerate(msgs):
            out.add(m, topic=topic, offset=item.at + i)
        if left is not None:
            left -= len(msgs)
        unseen = item.at + len(msgs)
    out.flush()
    if unseen is not None:
        sub.seen(unseen)
    if lost:
        return LOST
    return 0 if out.written else NOTHING


def take(opts, client):
    count = opts.count
    window = min(opts.window, count) if count is not None else opts.window
    match = opts.match
    taking = hubclient.Taking(client, opts.stream, window, match, opts.exit_at_end)
    out = Out(opts, "queue")
    left = count
    asked = window              # messages asked for so far (never more than COUNT)
    ids = []                    # written to the buffer, not acknowledged
    while left is None or left > 0:
        item = taking.next(opts.timeout if not ids else 0)
        if item is None:
            if ids:
                # Nothing more has arrived: write, then acknowledge.
                out.flush()
                more = len(ids) if count is None else min(len(ids), count - asked)
                asked += more
                taking.got(ids, more)
                ids = []
                continue
            break
        if item.kind == "end":
            break
        out.add(item.data[0], queue=opts.stream, id=item.at)
        ids.append(item.at)
        if left is not None:
            left -= 1
    out.flush()
    taking.got(ids)
    return 0 if out.written else NOTHING


def read(opts, client):
    data = hubclient.read(client, opts.stream, opts.match, not opts.exit_at_end, opts.timeout)
    if data is None:
        return NOTHING
    out = Out(opts, "queue")
    out.add(data, queue=opts.stream)
    out.flush()
    return 0


def room_records(opts, room, item):
    """An item of a room as what is written: a view as "view N: a b c",
    a message as "NAME: message" (names hold neither blanks nor colons),
    or with --json one object each."""
    record = opts.framing.record
    if item.kind == "view":
        if opts.json:
            rec = {"room": room, "seq": item.seq, "view": item.view, "members": item.data}
            if item.why is not None:
                rec.update(left=item.who, why=item.why)
            elif item.who is not None:
                rec["joined"] = item.who
            return [json.dumps(rec, sort_keys=True).encode() + b"\n"]
        return [record(b"view %d: %s" % (item.view, " ".join(item.data).encode()))]
    if opts.json:
        return [json.dumps({"room": room, "seq": item.seq + i, "view": item.view,
                            "from": item.who,
                            "message": m.decode("utf-8", "backslashreplace")},
                           sort_keys=True).encode() + b"\n"
                for i, m in enumerate(item.data)]
    who = item.who.encode() + b": "
    return [record(who + m) for m in item.data]


def join(opts, client):
    """A member until -n, -e, --timeout, removal or the hub's end: stdin's
    messages said in the room, the room's items printed as they come."""
    room = hubclient.Membership(client, opts.stream, opts.member)
    me = opts.member
    chan = client.chan
    left = opts.count
    ahead = 0                   # bytes said that have not come back yet
    reading = True              # stdin is open
    leaving = False
    rest = b""
    status = None
    try:
        while status is None:
            recs = []
            while status is None:
                item = room.next(0)
                if item is None:
                    break
                if item.kind == "gone":
                    say(f"removed from room {opts.stream}: more than the hub's buffer for "
                        f"a member waited unread (view {item.view} went on without it)")
                    status = LOST
                elif item.kind == "left":
                    status = 0
                elif item.kind == "said":
                    if item.who == me:
                        ahead -= sum(map(len, item.data))
                    if left is not None:
                        item = item._replace(data=item.data[:left])
                        left -= len(item.data)
                    recs += room_records(opts, opts.stream, item)
                    if left == 0:
                        status = 0
                else:
                    recs += room_records(opts, opts.stream, item)
                if len(recs) >= 1000:       # a busy room: write as it goes
                    write_all(1, b"".join(recs))
                    recs = []
            if recs:
                write_all(1, b"".join(recs))
            if status is not None:
                break
            if not reading and opts.exit_at_end and ahead <= 0 and not leaving:
                room.leave()
                leaving = True
            p = select.poll()
            p.register(chan.rfd, select.POLLIN)
            if reading and ahead < ROOM_AHEAD:
                p.register(0, select.POLLIN)
            ready = p.poll(None if opts.timeout is None else int(opts.timeout * 1000 + 0.999))
            if not ready:
                status = 0
                break
            if any(fd == 0 for fd, _ in ready):
                data = os.read(0, 1 << 18)
                problem = None
                if data:
                    parts, rest, problem = opts.framing.split(rest + data,
                                                              hubclient.ROOM_MESSAGE)
                else:
                    parts = opts.framing.end(rest)
                    rest = b""
                    reading = False
                room.say(parts)
                ahead += sum(map(len, parts))
                if problem:
                    raise errors.DataError(f"standard input: {problem} (a room's most is "
                                           f"{hubclient.ROOM_MESSAGE} bytes)")
    finally:
        if status != LOST and not leaving:
            try:
                room.leave()
            except errors.GridError:
                pass
    return status


def job(opts, client):
    done = hubclient.follow(client, opts.stream, write_all)
    if done.note:
        say(f"job {opts.stream}: {done.note}")
    return hubclient.exit_status(done)


def ls(opts, client):
    data = hubclient.streams(client)
    rows = [dict(t, kind="topic") for t in data["topics"]] + \
        [dict(q, kind="queue") for q in data["queues"]] + \
        [dict(r, kind="room") for r in hubclient.rooms(client)]
    if opts.json:
        sys.stdout.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        return 0
    table = [("KIND", "NAME", "MESSAGES", "BYTES", "FIRST", "NEXT", "READERS", "NOTE")]
    for r in rows:
        if r["kind"] == "topic":
            note = "durable" if r["durable"] else ""
            if r["named"]:
                note = " ".join([note] + [f"{k}@{v}" for k, v in r["named"].items()]).strip()
            table.append(("topic", r["name"], r["messages"], r["bytes"], r["first"], r["next"],
                          r["subscribers"], note))
        elif r["kind"] == "queue":
            table.append(("queue", r["name"], r["ready"], r["bytes"], "-", "-", r["takers"],
                          f"{r['taken']} taken" if r["taken"] else ""))
        else:
            more = r["count"] - len(r["members"])
            table.append(("room", r["name"], "-", "-", "-", r["seq"], r["count"],
                          f"view {r['view']}: " + " ".join(r["members"])
                          + (f" (+{more})" if more > 0 else "")))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]))]
    sys.stdout.write("".join(
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() + "\n"
        for row in table))
    return 0


def work(opts, client):
    m = opts.mode
    if m == "pub":
        return send_stdin(hubclient.publisher(client, opts.stream, opts.durable, opts.keep,
                                              opts.keep_bytes, opts.keep_age), opts.framing)
    if m == "put":
        return send_stdin(hubclient.putter(client, opts.stream), opts.framing)
    if m == "sub":
        return follow(opts, client, opts.stream)
    if m == "events":
        return follow(opts, client, hubclient.EVENTS)
    return {"take": take, "read": read, "join": join, "job": job, "ls": ls}[m](opts, client)


def _main(argv):
    opts = parse_options(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ)
    client = hubclient.Client(common.hub_address(opts.hub, env), env)
    try:
        return work(opts, client)
    finally:
        client.close()


def main(argv=None):
    return common.run("gridcat", _main, argv)
