"""The streams service without sockets, on the fake server of
test_hub_services (the narrow interface the real server implements):
topics' order, catch-up and loss counts, queues' exactly-once hand-out
and redelivery, the journal's part, and the message-list framing."""

import os

import pytest

from gridtools.hub import sched, streams
from gridtools.hub.conn import Conn
from gridtools.hub.durable import Durable
from gridtools.hub.server import Options
from gridtools.hub.sessions import Sessions
from gridtools.hub.streams import Streams
from gridtools.proto import frames, wire

from test_hub_services import FakeServer, Sock, said


class Hub:
    def __init__(self, tmp_path=None):
        self.server = FakeServer()
        self.opts = Options(state_dir=str(tmp_path / "state") if tmp_path else None)
        self.sched = sched.Scheduler()
        self.sessions = Sessions(self.server, self.sched, self.opts)
        self.durable = Durable(self.server, self.sessions, self.sched, self.opts)
        self.streams = Streams(self.server, self.durable, self.opts)
        self.server.services = [self.sessions, self.durable, self.streams]
        self.fds = iter(range(100, 10000))
        if tmp_path:
            self.durable.open()
            self.streams.open()

    def conn(self):
        c = Conn(Sock(next(self.fds)), "client-peer")
        c.role = "client"
        for s in self.server.services:
            s.opened(c)
        return c

    def say(self, conn, data):
        reader = wire.Reader()
        reader.feed(data)
        for msg in reader:
            try:
                self.streams.verbs[msg.verb][0](conn, msg)
            except wire.WireError as e:
                conn.out += e.reply()
        self.server.end_turn()

    def close(self):
        """As a hub that exits: the journal closed, the state dir's lock let go."""
        self.durable.close()
        os.close(self.durable._lockfd)


def drain(conn):
    """What conn was sent, its feeders pumped dry (as a reader that keeps up)."""
    out = []
    while True:
        conn.pump(sched.HIGH)
        got = said(conn)
        if not got:
            return out
        out += got


def messages(msgs):
    """(offset, message) of every MSG among msgs."""
    out = []
    for m in msgs:
        if m.verb == "MSG":
            out += [(int(m.get("off")) + i, x)
                    for i, x in enumerate(frames.unpack(m.body, int(m.get("n"))))]
    return out


def pub(hub, conn, topic, msgs, **kv):
    hub.say(conn, wire.format("PUB", topic, n=len(msgs), body=frames.pack(msgs), **kv))


def test_every_subscriber_sees_one_order():
    hub = Hub()
    p1, p2 = hub.conn(), hub.conn()
    subs = [hub.conn() for _ in range(3)]
    for s in subs:
        hub.say(s, wire.format("SUB", "news"))
        assert said(s)[0].verb == "OK"
        drain(s)
    for i in range(50):
        pub(hub, p1 if i % 2 else p2, "news", [b"m%d" % i, b"x\ny\0"])
    seen = [messages(drain(s)) for s in subs]
    assert seen[0] == seen[1] == seen[2]
    assert [o for o, _ in seen[0]] == list(range(100))
    assert [m.verb for m in said(p1)] == ["OK"] * 25


def test_a_subscriber_behind_its_buffer_catches_up_from_the_log():
    hub = Hub()
    slow, fast, p = hub.conn(), hub.conn(), hub.conn()
    for s in (slow, fast):
        hub.say(s, wire.format("SUB", "t"))
        drain(s)
        said(s)
    big = b"x" * 1000
    n = 3 * streams.SUB_BUFFER // 1000
    for i in range(n):
        pub(hub, p, "t", [big + b"%d" % i])
        drain(fast)
    # The slow one's buffer stopped growing near SUB_BUFFER; the rest waits in the log.
    assert len(slow.out) < streams.SUB_BUFFER + 2000
    got = messages(drain(slow))
    assert [o for o, _ in got] == list(range(n))
    pub(hub, p, "t", [b"live"])
    assert messages(said(slow)) == [(n, b"live")]       # live again


def test_a_subscriber_overtaken_by_retention_is_told_how_many_it_lost():
    hub = Hub()
    keeping, asleep, p = hub.conn(), hub.conn(), hub.conn()
    pub(hub, p, "t", [b"first"], keep=10)
    for s in (keeping, asleep):
        hub.say(s, wire.format("SUB", "t", **{"from": "begin"}))
    drain(keeping)                  # it reads; the other reads nothing yet
    for i in range(25):
        pub(hub, p, "t", [b"%d" % i])
    got = drain(keeping)
    assert [m for m in got if m.verb == "LOST"] == []
    assert [o for o, _ in messages(got)] == list(range(1, 26))
    got = drain(asleep)
    lost = [m for m in got if m.verb == "LOST"]
    assert [(m.get("n"), m.get("off")) for m in lost] == [("16", "16")]
    assert [o for o, _ in messages(got)] == list(range(16, 26))
    # A subscription that starts below the retained log loses the gap too.
    late = hub.conn()
    hub.say(late, wire.format("SUB", "t", **{"from": "3"}))
    got = drain(late)
    assert [(m.get("n"), m.get("off")) for m in got if m.verb == "LOST"] == [("13", "16")]


def test_from_end_exit_at_end_and_the_last_n():
    hub = Hub()
    p, s = hub.conn(), hub.conn()
    pub(hub, p, "t", [b"a", b"b", b"c"])
    hub.say(s, wire.format("SUB", "t", end=1, **{"from": "-2"}))
    got = drain(s)
    assert got[0].verb == "OK" and got[-1].verb == "END"
    assert messages(got) == [(1, b"b"), (2, b"c")]
    assert hub.streams.topics["t"].subs == []


def test_a_named_subscription_resumes_at_what_it_said_it_had_seen():
    hub = Hub()
    p = hub.conn()
    pub(hub, p, "t", [b"%d" % i for i in range(10)])
    s = hub.conn()
    hub.say(s, wire.format("SUB", "t", name="reader", **{"from": "begin"}))
    drain(s)
    hub.say(s, wire.format("SEEN", "t", "reader", off=4))
    hub.server.close(s)
    s2 = hub.conn()
    hub.say(s2, wire.format("SUB", "t", name="reader"))
    assert [o for o, _ in messages(drain(s2))] == list(range(4, 10))
    hub.say(s2, wire.format("SEEN", "t", "reader", off=99))
    assert said(s2)[0].get("field") == "off"


def test_nobody_publishes_to_the_events_topic_and_names_are_checked():
    hub = Hub()
    c = hub.conn()
    hub.say(c, wire.format("PUB", "_events", body=b"x"))
    hub.say(c, wire.format("PUB", "bad name", body=b"x"))
    hub.say(c, wire.format("PUB", "t", n=2, body=b"1:a\n"))
    errs = said(c)
    assert [m.verb for m in errs] == ["ERR", "ERR", "ERR"]
    assert all(m.args[0] == "64" for m in errs)


def test_events_are_lines_on_a_topic():
    hub = Hub()
    hub.streams.event("job.done", job="s1")         # nobody listens: not even formatted
    hub.streams.event("worker.left", name="w0")     # retained for a later subscriber
    assert [m.split(b" ")[1] for m in hub.streams.topics["_events"].log][-1:] == \
        [b"worker.left"]
    assert all(b"job.done" not in m for m in hub.streams.topics["_events"].log)
    s = hub.conn()
    hub.say(s, wire.format("SUB", "_events"))
    said(s)
    hub.streams.event("worker.joined", name="w 1", slots=4)
    hub.streams.event("job.done", job="7", exit=0)
    lines = [m for _, m in messages(drain(s))]
    assert [m.split(b" ")[1:] for m in lines] == [[b"worker.joined", b"name=w%201", b"slots=4"],
                                                  [b"job.done", b"job=7", b"exit=0"]]


def take(hub, conn, queue, **kv):
    """TAKE; what came after its OK."""
    hub.say(conn, wire.format("TAKE", queue, **kv))
    got = said(conn)
    assert got[0].verb == "OK"
    return got[1:]


def test_each_queued_message_goes_to_one_taker_and_back_when_it_leaves():
    hub = Hub()
    p, a, b = hub.conn(), hub.conn(), hub.conn()
    hub.say(p, wire.format("PUT", "q", n=6, body=frames.pack([b"%d" % i for i in range(6)])))
    assert [m.verb for m in said(p)] == ["OK"]
    got_a = [(int(m.get("id")), m.body) for m in take(hub, a, "q", n=2)]
    got_b = [(int(m.get("id")), m.body) for m in take(hub, b, "q", n=2)]
    assert len(got_a) == len(got_b) == 2 and not set(got_a) & set(got_b)
    # a acknowledges one and asks for one more; then it vanishes.
    hub.say(a, wire.format("GOT", "q", more=1, body=b"%d" % got_a[0][0]))
    got_a += [(int(m.get("id")), m.body) for m in said(a)]
    assert len(got_a) == 3
    hub.server.close(a)
    # Its two unacknowledged messages are b's now, after b acknowledges its own.
    hub.say(b, wire.format("GOT", "q", more=4, body=b" ".join(b"%d" % i for i, _ in got_b)))
    more_b = [(int(m.get("id")), m.body) for m in said(b)]
    bodies = sorted(x for _, x in [got_a[0]] + got_b + more_b)
    assert bodies == [b"%d" % i for i in range(6)]
    # Acknowledging what it was not given is refused.
    hub.say(b, wire.format("GOT", "q", body=b"%d" % got_a[0][0]))
    assert said(b)[0].args[0] == "65"


def test_associative_take_read_and_end():
    hub = Hub()
    p, t, r = hub.conn(), hub.conn(), hub.conn()
    hub.say(p, wire.format("PUT", "q", n=3, body=frames.pack([b"job 1", b"result 7", b"job 2"])))
    assert [(m.verb, m.body) for m in take(hub, t, "q", n=5, match="^result", end=1)] == [("MSG", b"result 7"), ("END", None)]
    hub.say(r, wire.format("READ", "q", match="2$"))
    assert [m.body for m in said(r)] == [b"job 2"]
    hub.say(r, wire.format("READ", "q", match="nothing"))
    assert [m.verb for m in said(r)] == ["END"]
    hub.say(r, wire.format("READ", "q", match="later", wait=1))
    assert said(r) == []
    hub.say(p, wire.format("PUT", "q", body=b"later"))
    assert [m.body for m in said(r)] == [b"later"]
    assert len(hub.streams.queues["q"].ready) == 3     # read leaves them there


def test_queue_messages_and_durable_topics_survive_in_the_journal(tmp_path):
    hub = Hub(tmp_path)
    p, t = hub.conn(), hub.conn()
    hub.say(p, wire.format("PUT", "q", n=3, body=frames.pack([b"a", b"b", b"c"])))
    (m,) = take(hub, t, "q", n=1)
    hub.say(t, wire.format("GOT", "q", body=m.get("id").encode()))
    pub(hub, p, "news", [b"x", b"y"], durable=1)
    s = hub.conn()
    hub.say(s, wire.format("SUB", "news", name="n1", **{"from": "begin"}))
    drain(s)
    hub.say(s, wire.format("SEEN", "news", "n1", off=1))
    hub.close()
    again = Hub(tmp_path)
    q = again.streams.queues["q"]
    assert sorted(q.msgs.values()) == [b"b", b"c"]
    s = again.conn()
    again.say(s, wire.format("SUB", "news", name="n1"))
    assert messages(drain(s)) == [(1, b"y")]
    again.close()


@pytest.mark.parametrize("body,n", [(b"1:a", 1), (b"01:a\n", 1), (b"2:a\n", 1),
                                    (b"1:a\nx", 1), (b"1:a\n", 2), (b"-1:a\n", 1),
                                    (b":\n", 1)])
def test_malformed_message_lists_are_refused(body, n):
    with pytest.raises(wire.WireError):
        frames.unpack(body, n)


def test_message_lists_round_trip_any_bytes():
    msgs = [b"", b"\n", b"\0", bytes(range(256)), b"12:x"]
    assert frames.unpack(frames.pack(msgs), len(msgs)) == msgs


def test_a_stream_of_message_lists_splits_wherever_a_read_ends():
    msgs = [b"", b"\n", b"\0", bytes(range(256)), b"12:x", b"7" * 1000]
    stream = frames.pack(msgs)
    for cut in range(len(stream) + 1):
        got, rest, problem = frames.split_stream(stream[:cut], 4096)
        assert problem is None
        more, rest, problem = frames.split_stream(rest + stream[cut:], 4096)
        assert (got + more, rest, problem) == (msgs, b"", None)


@pytest.mark.parametrize("stream,good", [(b"1:a\nx:", 1), (b"01:a\n", 0), (b"2:abc", 0),
                                         (b"123456789", 0), (b"1:a\n5000:", 1)])
def test_a_bad_stream_keeps_the_messages_before_it(stream, good):
    got, rest, problem = frames.split_stream(stream, 4096)
    assert len(got) == good and problem, (got, rest, problem)


def test_chunks_fit_a_body_and_a_batch():
    big = b"x" * (frames.MAX_MESSAGE)
    parts = list(frames.chunks([b"a", big, b"b"] + [b"c"] * (frames.MAX_BATCH + 1)))
    assert [len(p) for p in parts] == [1, 1, frames.MAX_BATCH, 2]
    assert all(len(frames.pack(p)) <= wire.MAX_BODY for p in parts)
