"""The client side of a hub: request/reply for gridsub and gridd ctl, and
HubExecutor, which runs gridmap's jobs on a grid from the pool's own
event loop (the pool cannot tell it from the local executor).
"""

import collections
import json
import os
import random
import select
import time

from gridtools.io import net
from gridtools.proto import errors, wire

CHUNK = 1 << 20             # stdin blocks travel in pieces of at most this


class Client:
    """A blocking connection to a hub, authenticated as a client."""

    def __init__(self, hub, env, timeout=net.CONNECT_TIMEOUT):
        self.hub = hub
        self.chan, self.welcome = net.dial(hub, "client", env, timeout)

    @classmethod
    def over(cls, chan, hub, welcome):
        """A client on a channel that needs no handshake (gridmap -S: the
        hub is in this process); hub names it in messages."""
        self = cls.__new__(cls)
        self.hub, self.chan, self.welcome = hub, chan, welcome
        return self

    def send(self, data):
        self.chan.send(data)

    def recv(self, timeout=None):
        msg = self.chan.recv(timeout)
        if msg.verb == "ERR":
            raise net.raise_err(msg, f"hub {self.hub}")
        return msg

    def request(self, verb, *args, body=None, **kv):
        self.send(wire.format(verb, *args, body=body, **kv))
        return self.recv(60.0)

    def close(self):
        try:
            self.chan.send(b"QUIT\n")
        except errors.GridError:
            pass
        self.chan.close()


def announce(hub, env, name, host, port):
    """Announce on hub that name is served at host:port; a wildcard host
    (listening everywhere) is announced as our address facing the hub.  The
    name lives as long as the returned Client: close it to withdraw."""
    client = Client(hub, env)
    try:
        if host in ("0.0.0.0", "::", ""):
            host = client.chan.sock.getsockname()[0]
        client.request("ANNOUNCE", name, f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    except BaseException:
        client.close()
        raise
    return client


def lookup(hub, env, name, wait=0.0):
    """The address announced as name on hub; with wait, waits up to that
    many seconds for it to be announced (UnavailableError if it is not)."""
    client = Client(hub, env)
    try:
        if not wait:
            return client.request("LOOKUP", name).arg(1)
        client.send(wire.format("LOOKUP", name, wait=1))
        t0 = time.monotonic()
        try:
            return client.recv(wait).arg(1)
        except errors.UnavailableError:
            if time.monotonic() - t0 < wait:
                raise
            raise errors.UnavailableError(
                f"hub {hub}: nothing announced as {name} within {wait:g}s") from None
    finally:
        client.close()


# -- durable jobs (gridsub) ---------------------------------------------------

REPLY_TIMEOUT = 60.0        # seconds to wait for the answer to a request


def submit(client, commands, require=None, retries=0, timeout=None):
    """Queue one durable job per command line: a generator of the jobs' ids,
    in order, each once the hub has the job in its journal.  Every SUBMIT
    goes out before the first answer is read (the hub answers in order and
    stores many with one fsync); a refusal raises where its answer comes,
    so every id yielded before it is of a stored job."""
    from gridtools.run import runner
    for ref, line in enumerate(commands):
        body, kv = job_request(line, runner.split_plain(line), require,
                               retries=retries or None, timeout=timeout)
        client.send(wire.format("SUBMIT", body=body, ref=ref, **kv))
    for ref in range(len(commands)):
        msg = client.recv(REPLY_TIMEOUT)
        if msg.verb != "JOB" or msg.get("ref") != str(ref):
            raise errors.ProtocolError(f"hub {client.hub}: expected JOB ID ref={ref}, "
                                       f"got {msg.verb} {' '.join(msg.args)[:80]}")
        yield _field(client, msg, lambda m: m.id_arg(0))


def follow(client, did, write):
    """Collect durable job did, waiting for it to finish: write(fd, data)
    for each piece of its output (fd 1 or 2) as it comes, from the start of
    what the hub stored (see Replay), then its result as a Done.  UnavailableError if the connection is lost meanwhile."""
    client.send(wire.format("RESULT", did, wait=1))
    name = str(did)
    while True:
        msg = client.recv(None)
        if msg.verb == "OUT" and msg.args[:1] == [name]:
            write(_field(client, msg, lambda m: m.int("fd", 1, 1, 2)), msg.body or b"")
        elif msg.verb == "DONE" and msg.args[:1] == [name]:
            return _field(client, msg, done_record)
        else:
            raise errors.ProtocolError(f"hub {client.hub}: expected OUT or DONE for job "
                                       f"{did}, got {msg.verb} {' '.join(msg.args)[:80]}")


# A durable job's result: exit (0-255) or sig (1-64) or neither, its outcome
# (gridtools.proto.errors.OUTCOMES), tries, the worker that ran it, and the
# hub's note when something went wrong on its side.  (collections, not
# typing: importing typing costs every client 3 ms.)
Done = collections.namedtuple("Done", "id exit sig outcome tries worker note")


def done_record(msg):
    """A durable job's DONE as a Done (WireError for a malformed field)."""
    return Done(msg.id_arg(0), msg.int("exit", None, 0, 255), msg.int("sig", None, 1, 64),
                msg.get("outcome"), msg.int("tries"), msg.get("worker"), msg.get("note"))


def exit_status(done):
    """The exit status that reports a durable job's result (a Done) as if
    it had run here: its own status, 128+N for signal N, 124 for a
    timeout, 75 when it was lost (gridsub --wait, gridcat job)."""
    outcome = done.outcome
    if outcome == errors.LOST:
        return errors.TEMPFAIL
    if outcome == errors.TIMEOUT:
        return errors.TIMED_OUT
    if done.sig is not None:
        return 128 + done.sig
    if done.exit is None:
        return 128 + 15 if outcome == errors.CANCELLED else 1
    return done.exit


def forget(client, did):
    """Delete the collected result of durable job did from the hub."""
    reply = client.request("FORGET", did)
    if reply.verb != "OK":
        raise errors.ProtocolError(f"hub {client.hub}: expected OK, got {reply.verb}")


class Replay:
    """write(fd, data) for a job followed more than once: each byte once.

    Followed again after a lost connection, a job's output comes from the
    start of what the hub stored.  Per fd, the bytes written on an earlier
    pass are skipped and compared (by SHA-256) with what was written: the
    same try, or a deterministic job run again after a hub restart, writes
    each byte exactly once.  A job that ran again and wrote something else
    is reported by end(); from then on its new output is what counts."""

    def __init__(self, write):
        import hashlib              # here: gridmap --hub never needs it (3 ms to import)
        self.hashlib = hashlib
        self.write = write
        self.count = {1: 0, 2: 0}                   # bytes written
        self.sums = {1: hashlib.sha256(), 2: hashlib.sha256()}     # of those bytes
        self.skip = {1: 0, 2: 0}                    # this pass: bytes still to skip
        self.seen = {}                              # this pass: SHA-256 of the skipped
        self.differs = set()

    def again(self):
        """A new pass from the start of the output."""
        self.skip = dict(self.count)
        self.seen = {1: self.hashlib.sha256(), 2: self.hashlib.sha256()}

    def __call__(self, fd, data):
        skip = self.skip[fd]
        if skip:
            head = data[:skip]
            self.seen[fd].update(head)
            self.skip[fd] = skip - len(head)
            if not self.skip[fd]:
                self._compare(fd)
            data = data[len(head):]
        if data:
            self.write(fd, data)
            self.count[fd] += len(data)
            self.sums[fd].update(data)

    def _compare(self, fd):
        if self.seen[fd].digest() != self.sums[fd].digest():
            self.differs.add(fd)
            self.sums[fd] = self.seen[fd]

    def end(self):
        """The pass reached the job's DONE: the fds whose output differed
        from what was written before (shorter counts as different)."""
        for fd, left in self.skip.items():
            if left:
                self.count[fd] -= left
                self.skip[fd] = 0
                self._compare(fd)
                self.differs.add(fd)
        differs, self.differs = self.differs, set()
        return sorted(differs)


def redial(hub, env, patience):
    """A new Client for hub, dialling again after pauses that grow from
    0.1 s to 5 s until the hub answers or patience seconds have passed
    (then the last UnavailableError).  Refusals other than an unreachable
    hub (a wrong key, a protocol error) raise at once."""
    deadline = time.monotonic() + patience
    delay = 0.1
    while True:
        left = deadline - time.monotonic()
        try:
            return Client(hub, env, timeout=min(net.CONNECT_TIMEOUT, max(left, 1.0)))
        except errors.UnavailableError as e:
            left = deadline - time.monotonic()
            if left <= 0:
                raise errors.UnavailableError(f"{e} (tried for {patience:g}s)") from None
            time.sleep(min(left, delay * random.uniform(0.8, 1.2)))
            delay = min(delay * 2, 5.0)


def results(client):
    """The durable jobs nobody has collected, oldest first (at most the
    newest 10,000): dicts with id, state, tries, worker, exit, sig,
    outcome, note, submitted, finished, age and command (see RESULTS in
    gridtools(7))."""
    return info(client, "RESULTS", "a JSON list", lambda rows: isinstance(rows, list) and all(
        isinstance(r, dict) and "id" in r for r in rows))


def info(client, verb, shape, fits):
    """Ask verb; the JSON body of its `INFO what` answer, when fits(it)
    (ProtocolError naming the shape expected otherwise)."""
    what = verb.lower()
    reply = client.request(verb)
    data = None
    if reply.verb == "INFO" and reply.args[:1] == [what]:
        try:
            data = json.loads(reply.body or b"")
        except ValueError:
            pass
    if data is None or not fits(data):
        raise errors.ProtocolError(f"hub {client.hub}: expected INFO {what} with {shape}, "
                                   f"got {reply.verb} {' '.join(reply.args)[:80]}")
    return data


# -- streams (gridcat): topics, queues, the hub's events ----------------------------

PUB_WINDOW = 16             # PUB or PUT batches sent before their OKs are read
EVENTS = "_events"          # the hub's events topic


def next_message(client, timeout=None):
    """The next message from the hub, or None when none came within timeout
    seconds (None: wait for ever; 0: only what has arrived).  An ERR raises."""
    chan = client.chan
    end = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            msg = chan.reader.next()
        except wire.WireError as e:
            raise errors.ProtocolError(f"hub {client.hub}: {e}") from None
        if msg is not None:
            if msg.verb == "ERR":
                raise net.raise_err(msg, f"hub {client.hub}")
            return msg
        left = None if end is None else max(0.0, end - time.monotonic())
        p = select.poll()
        p.register(chan.rfd, select.POLLIN)
        if not p.poll(None if left is None else int(left * 1000 + 0.999)):
            return None
        if not chan.read_some():
            raise errors.UnavailableError(f"hub {client.hub} closed the connection")


def _expect(client, msg, verb, name):
    if msg is None or msg.verb != verb or msg.args[:1] != [name]:
        got = "nothing" if msg is None else f"{msg.verb} {' '.join(msg.args)[:80]}"
        raise errors.ProtocolError(f"hub {client.hub}: expected {verb} {name}, got {got}")
    return msg


class Sender:
    """PUB or PUT batches of messages to one topic or queue, at most
    PUB_WINDOW of them unanswered; count is how many the hub has
    acknowledged (stored in its journal, for queues and durable topics)."""

    def __init__(self, client, name, request, **kv):
        self.client = client
        self.name = name
        self.request = request      # (body, n, kv) -> the PUB or PUT
        self.kv = kv
        self.unanswered = 0
        self.count = 0

    def send(self, msgs):
        """msgs in as many PUBs or PUTs as their size needs (a message is
        at most frames.MAX_MESSAGE bytes)."""
        from gridtools.proto import frames
        for part in frames.chunks(msgs):
            self.client.send(self.request(frames.pack(part), len(part), self.kv))
            self.kv = {}            # the topic's settings go with the first batch
            self.unanswered += 1
            while True:
                msg = next_message(self.client, None if self.unanswered > PUB_WINDOW else 0)
                if msg is None:
                    break
                self._answer(msg)

    def _answer(self, msg):
        _expect(self.client, msg, "OK", self.name)
        self.count += _field(self.client, msg, lambda m: m.int("n", 0, 0, wire.MAX_COUNT))
        self.unanswered -= 1

    def finish(self):
        """Wait for every answer; the number of messages acknowledged."""
        while self.unanswered:
            self._answer(next_message(self.client, REPLY_TIMEOUT))
        return self.count


def publisher(client, topic, durable=False, keep=None, keepbytes=None, keepage=None):
    """A Sender of messages to topic; the first batch sets its retention."""
    return Sender(client, topic,
                  lambda body, n, kv: wire.format("PUB", topic, n=n, body=body, **kv),
                  durable=durable or None, keep=keep, keepbytes=keepbytes, keepage=keepage)


def putter(client, queue):
    """A Sender of messages to queue."""
    return Sender(client, queue, lambda body, n, kv: wire.format("PUT", queue, n=n, body=body))


# What a subscription or a take delivers: kind "msg" (data is the list of
# messages from offset or id at), "lost" (n messages were lost: retention
# overtook the subscriber; at is where it goes on) or "end".
Item = collections.namedtuple("Item", "kind at data n", defaults=(0,))


class Subscription:
    """SUB topic: items in the topic's one order.  start is "end",
    "begin", an offset, or -N; since (seconds since the epoch) instead
    starts at the first message published then or later.  A named
    subscription's offset is kept by the hub: seen(off) moves it."""

    def __init__(self, client, topic, start="end", since=None, name=None, end=False):
        self.client = client
        self.topic = topic
        self.name = name
        self.client.send(wire.format("SUB", topic, name=name, end=end or None,
                                     since=since, **({} if since else {"from": start})))
        ok = _expect(client, next_message(client, REPLY_TIMEOUT), "OK", topic)
        self.offset = _field(client, ok, lambda m: m.int("off"))

    def next(self, timeout=None):
        """The next Item, or None when nothing came within timeout."""
        from gridtools.proto import frames
        msg = next_message(self.client, timeout)
        if msg is None:
            return None
        if msg.args[:1] == [self.topic]:
            if msg.verb == "MSG":
                n = _field(self.client, msg, lambda m: m.int("n", 1, 1, frames.MAX_BATCH))
                at = _field(self.client, msg, lambda m: m.int("off"))
                msgs = _field(self.client, msg, lambda m: frames.unpack(m.body or b"", n))
                return Item("msg", at, msgs)
            if msg.verb == "LOST":
                return Item("lost", _field(self.client, msg, lambda m: m.int("off")), [],
                            _field(self.client, msg, lambda m: m.int("n")))
            if msg.verb == "END":
                return Item("end", _field(self.client, msg, lambda m: m.int("off")), [])
        raise errors.ProtocolError(f"hub {self.client.hub}: expected MSG, LOST or END for "
                                   f"{self.topic}, got {msg.verb} {' '.join(msg.args)[:80]}")

    def seen(self, off):
        """Every message before off is written: a named subscription resumes there."""
        if self.name is not None:
            self.client.send(wire.format("SEEN", self.topic, self.name, off=off))


class Taking:
    """TAKE queue: each message to this taker alone, until acknowledged
    with got(); at most window of them held at once.  match: a regular
    expression (bytes, Python syntax) a message must contain; end: an
    "end" Item once nothing is queued for this taker."""

    def __init__(self, client, queue, window=1, match=None, end=False):
        self.client = client
        self.queue = queue
        self.client.send(wire.format("TAKE", queue, n=window, match=match, end=end or None))
        _expect(client, next_message(client, REPLY_TIMEOUT), "OK", queue)

    def next(self, timeout=None):
        msg = next_message(self.client, timeout)
        if msg is None:
            return None
        return _queue_item(self.client, msg, self.queue)

    def got(self, ids, more=0):
        """ids are written: gone from the queue; more further messages may come."""
        if ids or more:
            self.client.send(wire.format("GOT", self.queue, more=more or None,
                                         body=" ".join(map(str, ids)).encode()))


def _queue_item(client, msg, queue):
    if msg.args[:1] == [queue]:
        if msg.verb == "MSG":
            return Item("msg", _field(client, msg, lambda m: m.int("id", None, 1, wire.MAX_ID)),
                        [msg.body or b""])
        if msg.verb == "END":
            return Item("end", 0, [])
    raise errors.ProtocolError(f"hub {client.hub}: expected MSG or END for {queue}, got "
                               f"{msg.verb} {' '.join(msg.args)[:80]}")


def read(client, queue, match=None, wait=False, timeout=None):
    """Linda's rd: the oldest message in queue (that matches), left there;
    None when there is none (and, with wait, none came within timeout)."""
    client.send(wire.format("READ", queue, match=match, wait=wait or None))
    msg = next_message(client, timeout if wait else REPLY_TIMEOUT)
    if msg is None:
        return None
    item = _queue_item(client, msg, queue)
    return item.data[0] if item.kind == "msg" else None


def streams(client):
    """The hub's topics and queues: {"topics": [...], "queues": [...]}
    (see STREAMS in gridtools(7))."""
    return info(client, "STREAMS", "a JSON object", lambda d: isinstance(d, dict) and isinstance(
        d.get("topics"), list) and isinstance(d.get("queues"), list))


def parse_event(line):
    """An events-topic message as a dict: time, event, and its fields."""
    words = line.split(b" ")
    out = {"time": words[0].decode("ascii", "replace"),
           "event": words[1].decode("ascii", "replace") if len(words) > 1 else ""}
    for w in words[2:]:
        k, _, v = w.partition(b"=")
        try:
            out[k.decode("ascii")] = wire.unescape(v)
        except (UnicodeDecodeError, wire.WireError):
            continue
    return out


def _field(client, msg, decode):
    try:
        return decode(msg)
    except wire.WireError as e:
        raise errors.ProtocolError(f"hub {client.hub}: {e}") from None


def job_request(command, argv, require=None, **kv):
    """(body, kv) for RUN or SUBMIT of a finished command."""
    if argv is not None:
        body = wire.encode_argv(argv)
        kv["argv"] = 1
    else:
        body = os.fsencode(command)
    for k, v in (require or {}).items():
        kv["req." + k] = v
    return body, kv


class HubExecutor:
    """Runs the pool's jobs through one hub connection (see pool.py for the
    executor interface), its net.Channel attached to the pool's loop.  Job
    ids on the wire are the jobs' sequence numbers."""

    def __init__(self, hub, env, require=None, client=None):
        self.client = client or Client(hub, env)
        self.chan = self.client.chan
        self.hub_slots = int(self.client.welcome.get("slots", "0") or 0)
        self.require = require or {}
        self.capacity = max(1, self.hub_slots)
        self.jobs = {}                  # cid -> job
        self.unacked = {}               # cid -> stdin bytes the job has not taken
        self.pool = None
        self.handlers = {"OUT": self._on_out, "DONE": self._on_done, "ACK": self._on_ack,
                         "ERR": self._on_err, "PING": self._on_ping, "PONG": _ignore,
                         "BYE": self._on_bye, "NOTE": self._on_note}

    def attach(self, pool):
        self.pool = pool
        self.chan.attach(pool.loop, self._messages)

    # -- the executor interface ---------------------------------------------

    def start(self, job):
        fed = job.block is not None or self.pool.opts.round_robin
        cid = str(job.seq)
        argv = job.argv if job.argv is not None else self.pool.opts.shell.remote_argv(job.command)
        body, kv = job_request(job.command, argv, self.require, stdin=fed or None)
        self.jobs[cid] = job
        self.chan.send(wire.format("RUN", cid, body=body, **kv))
        if job.block is not None:
            self._send_in(cid, job.block)
            if not self.pool.opts.round_robin:
                self.chan.send(wire.format("IN", cid, eof=1, body=b""))

    def feed(self, job, block):
        self._send_in(str(job.seq), block)

    def end_input(self, job):
        self.chan.send(wire.format("IN", str(job.seq), eof=1, body=b""))

    def pending_input(self, job):
        return self.unacked.get(str(job.seq), 0)

    def kill(self, job, sig):
        cid = str(job.seq)
        if cid in self.jobs:
            self.chan.send(wire.format("KILL", cid, sig=int(sig)))

    def close(self):
        """The last words, with a deadline: a hub that stopped reading must
        not hold gridmap's exit."""
        self.chan.detach()
        try:
            self.chan.out += b"QUIT\n"
            self.chan.flush_blocking(net.CONNECT_TIMEOUT)
        except errors.GridError:
            pass
        self.chan.close()

    # -- plumbing -----------------------------------------------------------

    def _send_in(self, cid, block):
        length = len(block)
        offset = 0
        while offset < length:
            n = min(CHUNK, length - offset)
            if hasattr(block, "fd"):
                data = os.pread(block.fd, n, block.offset + offset)
                if not data:
                    break
                n = len(data)
            else:
                data = bytes(memoryview(block)[offset:offset + n])
            self.chan.send(wire.format("IN", cid, body=data))
            offset += n
        self.unacked[cid] = self.unacked.get(cid, 0) + offset

    def _messages(self):
        reader = self.chan.reader
        while True:
            try:
                msg = next(reader)
            except StopIteration:
                return
            except wire.WireError as e:
                raise errors.ProtocolError(f"hub {self.client.hub}: {e}")
            handler = self.handlers.get(msg.verb)
            if handler is None:
                raise errors.ProtocolError(f"hub {self.client.hub}: unexpected {msg.verb}")
            handler(msg)

    def _on_out(self, msg):
        job = self.jobs.get(msg.arg(0))
        if job is not None:
            self.pool.job_output(job, msg.int("fd", 1, 1, 2), msg.body or b"")

    def _on_done(self, msg):
        cid = msg.arg(0)
        job = self.jobs.pop(cid, None)
        if job is None:
            return
        self.unacked.pop(cid, None)
        job.host = msg.get("worker") or job.host
        outcome = msg.get("outcome")
        if outcome == errors.CANCELLED:
            job.cancelled = True        # by gridd ctl cancel: not to be retried
        self.pool.job_done(job, msg.int("exit"), msg.int("sig", None, 1, 64),
                           outcome if outcome == errors.LOST else None)

    def _on_ack(self, msg):
        cid = msg.arg(0)
        if cid in self.unacked:
            left = self.unacked[cid] = max(0, self.unacked[cid] - msg.int("n", 0))
            if not left:
                self.pool.input_taken(self.jobs[cid])

    def _on_err(self, msg):
        cid = msg.get("job")
        if cid is not None and cid not in self.jobs and msg.args[0] == "65":
            return      # our KILL or IN crossed the job's DONE: nothing to do
        raise net.raise_err(msg, f"hub {self.client.hub}")

    def _on_ping(self, msg):
        self.chan.send(b"PONG\n")

    def _on_note(self, msg):
        job = self.jobs.get(msg.get("job") or "")
        first = f" (job {job.seq}: {job.command})" if job is not None else ""
        self.pool.warn(f"{msg.get('text', 'a note from the hub')}{first}")

    def _on_bye(self, msg):
        raise errors.UnavailableError(f"hub {self.client.hub} said goodbye")


def _ignore(msg):
    pass


# -- rooms (gridcat join): members, views, one order ---------------------------------

# What a room delivers: kind "said" (data: the messages, who: the member
# that said them), "view" (data: the members, oldest first; who: the
# member that joined or left, why: how it left), "gone" (this member was
# removed: it read too slowly) or "left" (LEAVE is done).  seq is the
# place in the room's one order, view the view it happened in.
RoomItem = collections.namedtuple("RoomItem", "kind seq view data who why",
                                  defaults=((), None, None))
ROOM_MESSAGE = 1 << 20      # bytes in one message said in a room
ROOM_SAY = ROOM_MESSAGE + 16    # bytes in one SAY's body
ROOM_MEMBERS = 1000         # members of one room
ROOM_WHY = ("left", "gone", "silent", "behind")     # how a member left a view


class Membership:
    """JOIN room as name: the room's views and messages in its one order.
    The hub's PINGs are answered as they come."""

    def __init__(self, client, room, name):
        self.client = client
        self.room = room
        self.name = name
        client.send(wire.format("JOIN", room, name=name))
        ok = _expect(client, next_message(client, REPLY_TIMEOUT), "OK", room)
        self.view = _field(client, ok, lambda m: m.int("view", 0, 1, wire.MAX_COUNT))

    def say(self, msgs):
        """Send messages (a list of bytes, packed at most ROOM_SAY bytes a SAY)."""
        from gridtools.proto import frames
        batch, size = [], 0
        for m in msgs:
            if len(m) > ROOM_MESSAGE:
                raise errors.DataError(f"a message of {len(m)} bytes: a room takes at most "
                                       f"{ROOM_MESSAGE}")
            cost = len(m) + len(str(len(m))) + 2
            if batch and (size + cost > ROOM_SAY or len(batch) >= frames.MAX_BATCH):
                self.client.send(wire.format("SAY", self.room, n=len(batch),
                                             body=frames.pack(batch)))
                batch, size = [], 0
            batch.append(m)
            size += cost
        if batch:
            self.client.send(wire.format("SAY", self.room, n=len(batch),
                                         body=frames.pack(batch)))

    def leave(self):
        """Leave the room: a "left" item comes after everything before it."""
        self.client.send(wire.format("LEAVE", self.room))

    def next(self, timeout=None):
        """The next RoomItem, or None when nothing came within timeout."""
        from gridtools.proto import frames
        client = self.client
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if end is None else max(0.0, end - time.monotonic())
            msg = next_message(client, left)
            if msg is None:
                return None
            if msg.verb == "PING":
                client.send(b"PONG\n")
                continue
            if msg.args[:1] != [self.room]:
                break
            seq = _field(client, msg, lambda m: m.int("seq", 0))
            view = _field(client, msg, lambda m: m.int("view", 0))
            if msg.verb == "SAID":
                n = _field(client, msg, lambda m: m.int("n", 1, 1, frames.MAX_BATCH))
                who = _field(client, msg, lambda m: _room_name(m, m.get("from", "")))
                msgs = _field(client, msg, lambda m: frames.unpack(m.body or b"", n))
                return RoomItem("said", seq, view, msgs, who)
            if msg.verb == "VIEW":
                n = _field(client, msg, lambda m: m.int("n", 0, 0, ROOM_MEMBERS))
                members = _field(client, msg, lambda m: [
                    _room_name(m, w) for w in (m.body or b"").decode("ascii", "replace").split()])
                if len(members) != n:
                    raise errors.ProtocolError(f"hub {client.hub}: VIEW {self.room} says n={n} "
                                               f"and lists {len(members)} members")
                change = msg.get("joined") or msg.get("left")
                who = _field(client, msg, lambda m: change and _room_name(m, change))
                why = _field(client, msg, lambda m: _room_why(m, "left" in m.kv))
                self.view = view
                return RoomItem("view", seq, view, members, who, why)
            if msg.verb == "GONE":
                return RoomItem("gone", seq, view, why=_field(client, msg,
                                                              lambda m: _room_why(m, True)))
            if msg.verb == "OK":
                return RoomItem("left", seq, view)
            break
        raise errors.ProtocolError(f"hub {client.hub}: expected SAID, VIEW or GONE for room "
                                   f"{self.room}, got {msg.verb} {' '.join(msg.args)[:80]}")


def _room_name(msg, name):
    if not wire.NAME.match(name):
        raise wire.WireError(f"{msg.verb}: a member's name breaks the rule "
                             f"({wire.NAME_RULE}): {name[:64]!r}", wire.E_PROTOCOL)
    return name


def _room_why(msg, needed):
    why = msg.get("why")
    if (why is None and needed) or (why is not None and why not in ROOM_WHY):
        raise wire.WireError(f"{msg.verb}: why= is one of {', '.join(ROOM_WHY)}, got "
                             f"{str(why)[:64]!r}", wire.E_PROTOCOL)
    return why


def rooms(client):
    """The hub's rooms: dicts with name, view, seq, count and members (the
    first 100, oldest first); see ROOMS in gridtools(7)."""
    return info(client, "ROOMS", "a JSON list", lambda rows: isinstance(rows, list) and all(
        isinstance(r, dict) and "name" in r for r in rows))
