"""The hub's streams service (gridcat): topics (publish/subscribe, the hub
the sequencer of one total order per topic), queues (each message taken by
one taker, acknowledged after it was written, redelivered when its taker
goes) and the hub's own events as a read-only topic.  A service of the
hub (see gridtools.hub.server); durable topics and queue messages live in
the journal the durable service keeps, committed once a turn with its jobs.

Limits (gridcat(1), LIMITS): a live subscriber whose connection holds more
than SUB_BUFFER bytes reads from the topic's retained log instead (catch-up)
and is told how many messages it lost if retention overtook it; a topic
retains KEEP messages or KEEP_BYTES (or what its publisher asked, up to
MAX_KEEP, MAX_KEEP_BYTES); a queue holds at most QUEUE_MAX messages or
QUEUE_BYTES; a connection holds at most PER_CONN subscriptions and takes.
"""

import collections
import itertools
import json
import re
import time

from gridtools.hub import journal
from gridtools.proto import frames
from gridtools.proto import wire

CLIENT = ("client",)
EVENTS = "_events"          # the hub's events: a topic nobody may publish to
EVENTS_KEEP = 10000         # events retained
KEEP = 100000               # messages a topic retains unless its publisher says
KEEP_BYTES = 64 << 20       # ... and bytes
MAX_KEEP = 10_000_000
MAX_KEEP_BYTES = 1 << 30
SUB_BUFFER = 1 << 20        # a live subscriber's unsent bytes before it reads from the log
CATCH_UP = 1000             # messages in one MSG read from the log ...
CATCH_UP_BYTES = 1 << 18    # ... or about this many bytes
MAX_TOPICS = 10000          # topics and queues a hub holds, each
PER_CONN = 64               # subscriptions, takes and waiting reads of one connection
QUEUE_MAX = 1_000_000       # messages one queue holds
QUEUE_BYTES = 256 << 20     # ... and bytes
MAX_WINDOW = 10000          # messages a taker may hold unacknowledged
MAX_PATTERN = 256           # bytes of a --match pattern
_SINCE = re.compile(r"[0-9]{1,10}(\.[0-9]{1,9})?\Z", re.ASCII)


def check_name(verb, name, events=False):
    if wire.NAME.match(name) or (events and name == EVENTS):
        return name
    raise wire.WireError(f"{verb}: bad stream name {name[:64]!r}: {wire.NAME_RULE}", wire.E_USAGE,
                         field="name", got=name)


def pattern(msg):
    """match= as a compiled bytes pattern, or None."""
    text = msg.get("match")
    if text is None:
        return None
    raw = text.encode("utf-8", "surrogateescape")
    if not raw or len(raw) > MAX_PATTERN:
        raise wire.WireError(f"{msg.verb}: match= needs 1 to {MAX_PATTERN} bytes",
                             wire.E_USAGE, field="match", got=text)
    try:
        return re.compile(raw)
    except re.error as e:
        raise wire.WireError(f"{msg.verb}: match= is no regular expression: {e}",
                             wire.E_USAGE, field="match", got=text) from None


def messages(msg):
    """The messages a PUB or PUT carries: with n=, a message list
    (gridtools.proto.frames); without, the body is one message."""
    body = msg.body
    if body is None:
        raise wire.WireError(f"{msg.verb}: needs the message as its body (bytes=N)",
                             wire.E_USAGE)
    n = msg.int("n", None, 1, frames.MAX_BATCH)
    if n is None:
        return [body], None
    return frames.unpack(body, n, msg.verb), body


class Topic:
    __slots__ = ("name", "durable", "keep", "keepbytes", "keepage", "log", "first", "next",
                 "assigned", "size", "stamps", "subs", "named")

    def __init__(self, name, keep=KEEP, keepbytes=KEEP_BYTES, keepage=None):
        self.name = name
        self.durable = False
        self.keep = keep
        self.keepbytes = keepbytes
        self.keepage = keepage
        self.log = collections.deque()     # the retained messages, log[0] at offset first
        self.first = 0
        self.next = 0               # the offset the next message published gets
        self.assigned = 0           # ... or has, awaiting the journal's commit
        self.size = 0               # bytes in log
        self.stamps = collections.deque()  # (first offset, time) of each batch
        self.subs = []
        self.named = {}             # named subscription -> its next offset


class Sub:
    __slots__ = ("conn", "topic", "next", "live", "name", "end", "gone")

    def __init__(self, conn, topic, start, name, end):
        self.conn = conn
        self.topic = topic
        self.next = start
        self.live = False           # sent what is published as it comes
        self.name = name
        self.end = end              # END once nothing more is retained
        self.gone = False


class Queue:
    __slots__ = ("name", "ready", "msgs", "size", "takers", "readers")

    def __init__(self, name):
        self.name = name
        self.ready = collections.deque()   # ids not given to a taker, oldest first
        self.msgs = {}              # id -> message, for every message not acknowledged
        self.size = 0
        self.takers = []
        self.readers = []           # (conn, pattern) waiting for a READ


class Taker:
    __slots__ = ("conn", "queue", "credit", "pattern", "held", "end", "ended")

    def __init__(self, conn, queue, credit, pat, end):
        self.conn = conn
        self.queue = queue
        self.credit = credit        # messages it may be given now
        self.pattern = pat
        self.held = set()           # ids given, not acknowledged
        self.end = end
        self.ended = False


class Peer:
    """What one connection holds here."""
    __slots__ = ("subs", "takers", "reads")

    def __init__(self):
        self.subs = []
        self.takers = {}            # queue name -> Taker
        self.reads = 0


class Streams:
    def __init__(self, server, durable, opts):
        self.server = server
        self.durable = durable      # its journal and its one commit a turn
        self.opts = opts
        self.topics = {EVENTS: Topic(EVENTS, keep=EVENTS_KEEP)}
        self.queues = {}
        self.peers = {}             # conn -> Peer
        self.listeners = {}         # fn -> kinds (prefixes, or None: all): /events
        self.stamp = (0, b"")       # (second, its text): one strftime a second
        self.jobs_wanted = False    # someone follows job.* events (server.events_on too)
        self.next_id = 1            # the next queue message's id
        self.verbs = {
            "PUB": (self.on_pub, CLIENT), "SUB": (self.on_sub, CLIENT),
            "SEEN": (self.on_seen, CLIENT), "PUT": (self.on_put, CLIENT),
            "TAKE": (self.on_take, CLIENT), "GOT": (self.on_got, CLIENT),
            "READ": (self.on_read, CLIENT), "STREAMS": (self.on_streams, CLIENT),
        }

    @property
    def journal(self):
        return self.durable.journal

    def open(self):
        """After the journal opened: its queues and durable topics back in memory."""
        j = self.journal
        if j is None:
            return
        for qid, name, data in j.queue_all():
            q = self.queue(name)
            q.msgs[qid] = data
            q.size += len(data)
            q.ready.append(qid)
            self.next_id = qid + 1
        for name, keep, keepbytes, keepage, msgs, named in j.topics():
            t = self.topics[name] = Topic(name, keep, keepbytes, keepage)
            t.durable = True
            t.named = named
            if msgs:
                t.first = msgs[0][0]
                t.next = t.assigned = msgs[-1][0] + 1
            else:
                t.first = t.next = t.assigned = max(named.values(), default=0)
            for off, stamp, data in msgs:
                if not t.stamps or t.stamps[-1][1] != stamp:
                    t.stamps.append((off, stamp))
                t.log.append(data)
                t.size += len(data)
        n = sum(len(q.msgs) for q in self.queues.values())
        if n:
            self.server.log(f"journal: {n} queued message{'' if n == 1 else 's'} restored")

    def opened(self, conn):
        if conn.role == "client":
            self.event("client.connected", peer=conn.peer)

    def closed(self, conn, quiet):
        if conn.role == "client":
            self.event("client.left", peer=conn.peer)
        peer = self.peers.pop(conn, None)
        if peer is None:
            return
        for sub in peer.subs:
            sub.gone = True
            sub.topic.subs.remove(sub)
            self.watched(sub.topic)
        for tk in peer.takers.values():
            self.drop_taker(tk)
        if peer.reads:
            for q in self.queues.values():
                q.readers = [r for r in q.readers if r[0] is not conn]

    def peer(self, conn):
        p = self.peers.get(conn)
        if p is None:
            p = self.peers[conn] = Peer()
        return p

    def commit(self, conn, done, failed):
        """done() once the journal committed this turn's writes, failed() if not."""
        self.durable.after_commit(conn, done, failed)

    def refused(self, conn, verb, exc):
        self.durable.failed(exc)
        raise wire.WireError(f"{verb}: not stored, try again later: {exc}",
                             wire.E_TEMPFAIL) from None

    # -- the hub's events ----------------------------------------------------------

    def watched(self, t):
        """The server's events_on: true while someone follows the events."""
        if t.name == EVENTS:
            self.jobs_wanted = self.server.events_on = bool(t.subs) or any(
                kinds is None or any(k.startswith("job") for k in kinds)
                for kinds in self.listeners.values())

    def listen(self, fn, kinds=None):
        """fn(line) for each event from now on whose kind starts with one
        of kinds (None: every one), until unlisten(fn).  The job.* events
        are made only while someone wants them: a few for every job."""
        self.listeners[fn] = tuple(kinds) if kinds is not None else None
        self.watched(self.topics[EVENTS])

    def unlisten(self, fn):
        del self.listeners[fn]
        self.watched(self.topics[EVENTS])

    def event(self, kind, **fields):
        """One line on the events topic: time, kind, key=value...  The
        job.* events, a few for every job, only while somebody listens."""
        t = self.topics[EVENTS]
        if not self.jobs_wanted and kind.startswith("job."):
            return
        now = time.time()
        sec = int(now)
        if sec != self.stamp[0]:
            self.stamp = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)).encode())
        line = b" ".join([b"%s.%03dZ" % (self.stamp[1], int(now * 1000) % 1000),
                          kind.encode("ascii")]
                         + [k.encode("ascii") + b"=" + wire.escape(str(v))
                            for k, v in fields.items() if v is not None])
        t.assigned += 1
        self.publish(t, [line], None, now)
        if self.listeners:
            for fn, kinds in list(self.listeners.items()):  # one may leave as it hears
                if kinds is None or kind.startswith(kinds):
                    fn(line)

    # -- topics --------------------------------------------------------------------

    def topic(self, verb, name):
        t = self.topics.get(name)
        if t is None:
            if len(self.topics) >= MAX_TOPICS:
                raise wire.WireError(f"{verb}: the hub holds {MAX_TOPICS} topics already",
                                     wire.E_TEMPFAIL)
            t = self.topics[name] = Topic(name)
        return t

    def on_pub(self, conn, msg):
        name = check_name("PUB", msg.arg(0))
        msgs, body = messages(msg)
        t = self.topic("PUB", name)
        keep = msg.int("keep", None, 1, MAX_KEEP)
        keepbytes = msg.int("keepbytes", None, 1, MAX_KEEP_BYTES)
        keepage = msg.seconds("keepage")
        durable = msg.get("durable") == "1"
        if durable and self.journal is None:
            raise wire.WireError("PUB: this hub keeps no journal (no --state): no durable "
                                 "topics", wire.E_UNAVAILABLE)
        changed = keep or keepbytes or keepage or (durable and not t.durable)
        t.keep = keep or t.keep
        t.keepbytes = keepbytes or t.keepbytes
        t.keepage = keepage or t.keepage
        first = t.assigned
        t.assigned += len(msgs)
        now = time.time()
        if durable and not t.durable:
            t.durable = True        # from this message on
        if not t.durable:
            self.publish(t, msgs, body, now)
            self.server.send(conn, wire.format_stream(b"OK", name, b"off", first, len(msgs)))
            return
        try:
            if changed:
                self.journal.topic_set(name, t.keep, t.keepbytes, t.keepage)
            self.journal.topic_add(name, first, now, msgs)
        except journal.JournalError as e:
            t.assigned = t.next
            self.refused(conn, "PUB", e)

        def stored():
            self.publish(t, msgs, body, now)
            self.server.send(conn, wire.format_stream(b"OK", name, b"off", first, len(msgs)))

        def failed():
            t.assigned = t.next
            self.server.send(conn, wire.error(wire.E_TEMPFAIL, f"PUB: not stored, try again "
                                              f"later: {self.durable.problem}"))
        self.commit(conn, stored, failed)

    def publish(self, t, msgs, body, now):
        """msgs join t's log at t.next; live subscribers have them at once,
        formatted once for all of them; the others read them from the log."""
        first = t.next
        t.log.extend(msgs)
        t.next += len(msgs)
        t.size += sum(map(len, msgs))
        t.stamps.append((first, now))
        self.trim(t, now)
        data = None
        send = self.server.send
        for sub in t.subs:
            if sub.live and sub.next == first and len(sub.conn.out) < SUB_BUFFER:
                if data is None:
                    data = wire.format_stream(b"MSG", t.name, b"off", first, len(msgs),
                                              body if body is not None else frames.pack(msgs))
                send(sub.conn, data)
                sub.next = t.next
            elif sub.live:
                sub.live = False    # too far behind: from the log until it catches up
                self.server.feed(sub.conn, self.catch_up(sub))
            else:
                self.server.refill(sub.conn)

    def trim(self, t, now):
        """Retention: the oldest messages go past keep, keepbytes or keepage."""
        log = t.log
        before = t.first
        while log and (len(log) > t.keep or t.size > t.keepbytes):
            t.size -= len(log.popleft())
            t.first += 1
        stamps = t.stamps
        if t.keepage is not None:
            cutoff = now - t.keepage
            while stamps and stamps[0][1] < cutoff:
                end = stamps[1][0] if len(stamps) > 1 else t.next
                while t.first < end:
                    t.size -= len(log.popleft())
                    t.first += 1
                stamps.popleft()
        while len(stamps) > 1 and stamps[1][0] <= t.first:
            stamps.popleft()
        if t.durable and t.first > before:
            try:
                self.journal.topic_trim(t.name, t.first)
            except journal.JournalError as e:
                self.durable.failed(e)      # trimmed at the next publish

    def start_offset(self, t, msg):
        since = msg.get("since")
        if since is not None:
            if not _SINCE.match(since):
                raise wire.WireError("SUB: since= needs seconds since the epoch",
                                     wire.E_USAGE, field="since", got=since)
            when = float(since)
            for off, stamp in t.stamps:
                if stamp >= when:
                    return max(off, t.first)
            return t.next
        frm = msg.get("from", "end")
        if frm == "end":
            return t.next
        if frm in ("begin", "beginning"):
            return t.first
        if frm.startswith("-"):
            return max(t.first, t.next - wire.uint(frm[1:], "SUB: from=-", 0, wire.MAX_COUNT,
                                                   field="from"))
        return min(t.next, wire.uint(frm, "SUB: from=", 0, wire.MAX_COUNT, field="from"))

    def on_sub(self, conn, msg):
        name = check_name("SUB", msg.arg(0), events=True)
        sname = msg.get("name")
        if sname is not None:
            check_name("SUB: name=", sname)
        peer = self.peer(conn)
        if len(peer.subs) >= PER_CONN:
            raise wire.WireError(f"SUB: a connection holds at most {PER_CONN} subscriptions",
                                 wire.E_USAGE)
        t = self.topic("SUB", name)
        self.trim(t, time.time())
        if sname is not None and sname in t.named:
            start = t.named[sname]
        else:
            start = self.start_offset(t, msg)
            if sname is not None:
                self.set_named(t, sname, start)
        sub = Sub(conn, t, start, sname, msg.get("end") == "1")
        t.subs.append(sub)
        peer.subs.append(sub)
        self.watched(t)
        self.server.send(conn, wire.format("OK", name, off=start, first=t.first, next=t.next))
        self.server.feed(conn, self.catch_up(sub))

    def catch_up(self, sub):
        """MSGs from the log until sub reaches the end, then it is live
        (or, with end=1, gone after an END); a LOST first when retention
        overtook it.  Pumped by the server as sub's connection drains."""
        t = sub.topic
        while not sub.gone:
            if sub.next < t.first:
                lost = t.first - sub.next
                sub.next = t.first
                yield wire.format("LOST", t.name, n=lost, off=t.first)
                continue
            if sub.next >= t.next:
                if sub.end:
                    sub.gone = True
                    t.subs.remove(sub)
                    self.peers[sub.conn].subs.remove(sub)
                    self.watched(t)
                    yield wire.format("END", t.name, off=t.next)
                else:
                    sub.live = True
                return
            msgs = []
            size = 0
            for m in itertools.islice(t.log, sub.next - t.first, sub.next - t.first + CATCH_UP):
                msgs.append(m)
                size += len(m)
                if size >= CATCH_UP_BYTES:
                    break
            first = sub.next
            sub.next += len(msgs)
            yield wire.format_stream(b"MSG", t.name, b"off", first, len(msgs), frames.pack(msgs))

    def on_seen(self, conn, msg):
        """A named subscription wrote every message before off."""
        t = self.topics.get(check_name("SEEN", msg.arg(0), events=True))
        sname = msg.arg(1)
        if t is None or sname not in t.named:
            raise wire.WireError(f"SEEN: no subscription {sname[:64]!r} on that topic",
                                 wire.E_DATA)
        off = msg.int("off", None, 0, t.next)
        if off is None:
            raise wire.WireError("SEEN: needs off=", wire.E_USAGE, field="off")
        if off > t.named[sname]:
            self.set_named(t, sname, off)

    def set_named(self, t, sname, off):
        if sname not in t.named and len(t.named) >= MAX_TOPICS:
            raise wire.WireError(f"SUB: a topic holds at most {MAX_TOPICS} named "
                                 f"subscriptions", wire.E_TEMPFAIL)
        t.named[sname] = off
        if t.durable:
            try:
                self.journal.topic_offset(t.name, sname, off)
            except journal.JournalError as e:
                self.durable.failed(e)      # kept in memory; stored with the next one
                return
            self.commit(None, _nothing, _nothing)

    # -- queues --------------------------------------------------------------------

    def queue(self, name, verb="PUT"):
        q = self.queues.get(name)
        if q is None:
            if len(self.queues) >= MAX_TOPICS:
                raise wire.WireError(f"{verb}: the hub holds {MAX_TOPICS} queues already",
                                     wire.E_TEMPFAIL)
            q = self.queues[name] = Queue(name)
        return q

    def on_put(self, conn, msg):
        name = check_name("PUT", msg.arg(0))
        msgs, _ = messages(msg)
        q = self.queue(name)
        size = sum(map(len, msgs))
        if len(q.msgs) + len(msgs) > QUEUE_MAX or q.size + size > QUEUE_BYTES:
            raise wire.WireError(f"PUT: queue {name} is full ({len(q.msgs)} messages, "
                                 f"{q.size} bytes; at most {QUEUE_MAX} or {QUEUE_BYTES})",
                                 wire.E_TEMPFAIL)
        first = self.next_id
        self.next_id += len(msgs)
        reply = wire.format_stream(b"OK", name, b"id", first, len(msgs))
        if self.journal is None:
            self.add(q, first, msgs)
            self.server.send(conn, reply)
            return
        try:
            self.journal.queue_put(name, first, msgs)
        except journal.JournalError as e:
            self.refused(conn, "PUT", e)

        def stored():
            self.add(q, first, msgs)
            self.server.send(conn, reply)

        def failed():
            self.server.send(conn, wire.error(wire.E_TEMPFAIL, f"PUT: not stored, try again "
                                              f"later: {self.durable.problem}"))
        self.commit(conn, stored, failed)

    def add(self, q, first, msgs):
        for qid, m in enumerate(msgs, first):
            q.msgs[qid] = m
            q.ready.append(qid)
            q.size += len(m)
        self.dispatch(q)

    def first_for(self, q, pat):
        """The id of the oldest ready message pat matches (any with None),
        taken off the ready list; None when there is none."""
        ready = q.ready
        if not ready:
            return None
        if pat is None:
            return ready.popleft()
        msgs = q.msgs
        for i, qid in enumerate(ready):
            if pat.search(msgs[qid]):
                del ready[i]
                return qid
        return None

    def peek_for(self, q, pat):
        msgs = q.msgs
        for qid in q.ready:
            if pat is None or pat.search(msgs[qid]):
                return qid
        return None

    def dispatch(self, q):
        """Give ready messages to takers with credit, one each in turn;
        answer waiting READs; END to takers that asked for it and will
        get nothing more now."""
        if q.readers:
            waiting = []
            for conn, pat in q.readers:
                qid = self.peek_for(q, pat)
                if qid is None:
                    waiting.append((conn, pat))
                else:
                    self.peers[conn].reads -= 1
                    self.server.send(conn, wire.format_stream(b"MSG", q.name, b"id", qid, None, q.msgs[qid]))
            q.readers = waiting
        send = self.server.send
        busy = True
        while q.ready and busy:
            busy = False
            for tk in q.takers:
                if tk.credit <= 0:
                    continue
                qid = self.first_for(q, tk.pattern)
                if qid is None:
                    continue
                tk.credit -= 1
                tk.held.add(qid)
                send(tk.conn, wire.format_stream(b"MSG", q.name, b"id", qid, None, q.msgs[qid]))
                busy = True
        for tk in [tk for tk in q.takers if tk.end and tk.credit > 0]:
            if self.peek_for(q, tk.pattern) is None:
                tk.ended = True
                q.takers.remove(tk)
                send(tk.conn, wire.format("END", q.name))

    def on_take(self, conn, msg):
        name = check_name("TAKE", msg.arg(0))
        peer = self.peer(conn)
        if name in peer.takers:
            raise wire.WireError(f"TAKE: this connection takes from {name} already",
                                 wire.E_USAGE)
        if len(peer.takers) + len(peer.subs) + peer.reads >= PER_CONN:
            raise wire.WireError(f"TAKE: a connection holds at most {PER_CONN} streams",
                                 wire.E_USAGE)
        credit = msg.int("n", 1, 1, MAX_WINDOW)
        pat = pattern(msg)
        q = self.queue(name, "TAKE")
        tk = peer.takers[name] = Taker(conn, q, credit, pat, msg.get("end") == "1")
        q.takers.append(tk)
        self.server.send(conn, wire.format("OK", name))
        self.dispatch(q)

    def on_got(self, conn, msg):
        """The taker wrote these messages: they are gone; more=M more may come."""
        name = check_name("GOT", msg.arg(0))
        peer = self.peers.get(conn)
        tk = peer.takers.get(name) if peer is not None else None
        if tk is None:
            raise wire.WireError(f"GOT: this connection takes nothing from {name}",
                                 wire.E_DATA)
        words = (msg.body or b"").split()
        ids = [wire.uint(w.decode("ascii", "replace"), "GOT: a message id", 1, wire.MAX_ID,
                         field="id") for w in words[:MAX_WINDOW + 1]]
        unknown = [i for i in ids if i not in tk.held]
        if unknown:
            raise wire.WireError(f"GOT: message {unknown[0]} was not given to this "
                                 f"connection (or was acknowledged)", wire.E_DATA,
                                 field="id", got=unknown[0])
        more = msg.int("more", 0, 0, MAX_WINDOW)
        q = tk.queue
        for qid in ids:
            tk.held.discard(qid)
            q.size -= len(q.msgs.pop(qid))
        if ids and self.journal is not None:
            try:
                self.journal.queue_done(ids)
            except journal.JournalError as e:
                self.durable.failed(e)      # redelivered after a restart: at least once
            else:
                self.commit(None, _nothing, _nothing)
        tk.credit = min(tk.credit + more, MAX_WINDOW - len(tk.held))
        if not tk.ended:
            self.dispatch(q)

    def drop_taker(self, tk):
        """tk's connection went: what it held goes back to the queue's front."""
        q = tk.queue
        if not tk.ended:
            q.takers.remove(tk)
        if tk.held:
            q.ready.extendleft(sorted(tk.held, reverse=True))
            tk.held.clear()
            self.dispatch(q)

    def on_read(self, conn, msg):
        """Linda's rd: the oldest ready message (that matches), not taken."""
        name = check_name("READ", msg.arg(0))
        pat = pattern(msg)
        q = self.queues.get(name)
        qid = self.peek_for(q, pat) if q is not None else None
        if qid is not None:
            self.server.send(conn, wire.format_stream(b"MSG", name, b"id", qid, None, q.msgs[qid]))
        elif msg.get("wait") == "1":
            peer = self.peer(conn)
            if len(peer.takers) + len(peer.subs) + peer.reads >= PER_CONN:
                raise wire.WireError(f"READ: a connection holds at most {PER_CONN} streams",
                                     wire.E_USAGE)
            peer.reads += 1
            self.queue(name, "READ").readers.append((conn, pat))
        else:
            self.server.send(conn, wire.format("END", name))

    # -- listing -----------------------------------------------------------------

    def lags(self):
        """(topic, messages the furthest-behind subscriber has yet to get)."""
        return [(t.name, max(t.next - s.next for s in t.subs))
                for t in sorted(self.topics.values(), key=lambda t: t.name) if t.subs]

    def depths(self, readers=False):
        """(kind, name, messages, bytes) of every topic and queue, and with
        readers their subscribers or takers."""
        rows = [("topic", t.name, len(t.log), t.size, len(t.subs))
                for t in sorted(self.topics.values(), key=lambda t: t.name)]
        rows += [("queue", q.name, len(q.msgs), q.size, len(q.takers))
                 for q in sorted(self.queues.values(), key=lambda q: q.name)]
        return rows if readers else [r[:4] for r in rows]

    def on_streams(self, conn, msg):
        topics = [{"name": t.name, "first": t.first, "next": t.next, "messages": len(t.log),
                   "bytes": t.size, "subscribers": len(t.subs), "durable": t.durable,
                   "named": dict(sorted(t.named.items()))}
                  for t in sorted(self.topics.values(), key=lambda t: t.name)]
        queues = [{"name": q.name, "ready": len(q.ready), "taken": len(q.msgs) - len(q.ready),
                   "bytes": q.size, "takers": len(q.takers)}
                  for q in sorted(self.queues.values(), key=lambda q: q.name)]
        body = json.dumps({"topics": topics, "queues": queues}, sort_keys=True).encode()
        self.server.send(conn, wire.format("INFO", "streams", body=body))


def _nothing():
    pass
