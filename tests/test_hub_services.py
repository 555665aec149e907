"""The hub's services without sockets: each is driven through a fake server
that implements the narrow interface gridtools.hub.server documents (send,
close, pause/hold/release, when_low, feed/refill, before_flush, guard,
call_later, log) — the seam the real server plugs into, not a mock of the
service under test.  Messages are real wire bytes parsed by wire.Reader."""

import json
import time

from gridtools.hub import sched
from gridtools.hub.conn import Conn
from gridtools.hub.control import Control
from gridtools.hub.durable import Durable
from gridtools.hub.names import Names
from gridtools.hub.server import Options
from gridtools.hub.sessions import NOTE_AFTER, Sessions
from gridtools.proto import wire


class Sock:
    def __init__(self, fd):
        self.fd = fd

    def fileno(self):
        return self.fd


class Timer:
    def __init__(self, delay, fn, args):
        self.delay, self.fn, self.args = delay, fn, args
        self.cancelled = False

    def cancel(self):
        self.cancelled = True


class FakeServer:
    """The narrow interface, recording what the services ask of it."""

    def __init__(self):
        self.draining = False
        self.addresses = ["127.0.0.1:7711"]
        self.services = []
        self.timers = []
        self.hooks = []
        self.logs = []
        self.held = set()
        self.paused = {}            # conn -> the conn whose buffer it waits on
        self.drained = None
        self.events = []            # (kind, fields) the services reported
        self.events_on = True

    def event(self, kind, **fields):
        self.events.append((kind, fields))

    def send(self, conn, data):
        if not conn.closing:
            conn.out += data

    def close(self, conn, quiet=False):
        if not conn.closing:
            conn.closing = True
            for s in self.services:
                s.closed(conn, quiet)

    def pause(self, conn, because):
        self.paused[conn] = because

    def hold(self, conn):
        self.held.add(conn)

    def release(self, conn):
        self.held.discard(conn)

    def when_low(self, conn, fn):
        conn.low = fn

    def feed(self, conn, gen):
        conn.feeders.append(gen)

    def refill(self, conn):
        pass

    def before_flush(self, fn):
        self.hooks.append(fn)

    def guard(self, conn, fn, *args):
        fn(*args)

    def call_later(self, delay, fn, *args):
        t = Timer(delay, fn, args)
        self.timers.append(t)
        return t

    def start_drain(self, why):
        self.drained = why

    def log(self, text):
        self.logs.append(text)

    # -- for the tests ------------------------------------------------------------

    def end_turn(self):
        hooks, self.hooks = self.hooks, []
        for fn in hooks:
            fn()

    def fire(self, fn):
        """Run the pending timers that call fn."""
        due = [t for t in self.timers if t.fn == fn and not t.cancelled]
        assert due, f"no timer for {fn}"
        for t in due:
            self.timers.remove(t)
            t.fn(*t.args)


class Hub:
    """The services composed as server.Hub composes them, on a FakeServer."""

    def __init__(self, tmp_path=None, **opts):
        self.server = FakeServer()
        self.opts = Options(state_dir=str(tmp_path / "state") if tmp_path else None, **opts)
        self.sched = sched.Scheduler()
        self.sessions = Sessions(self.server, self.sched, self.opts)
        self.durable = Durable(self.server, self.sessions, self.sched, self.opts)
        self.control = Control(self.server, self.sessions, self.durable, self.opts)
        self.names = Names(self.server)
        self.server.services = [self.sessions, self.durable, self.control, self.names]
        self.table = {}
        for s in self.server.services:
            for verb, (fn, roles) in s.verbs.items():
                for role in roles:
                    self.table[role, verb] = fn
        self.fds = iter(range(100, 10000))
        if tmp_path:
            self.durable.open()

    def conn(self, role, name=None):
        c = Conn(Sock(next(self.fds)), name or f"{role}-peer")
        c.role = role
        for s in self.server.services:
            s.opened(c)
        return c

    def worker(self, slots=1, **tags):
        w = self.conn("worker")
        extra = {f"tag.{k}": v for k, v in tags.items()}
        self.say(w, wire.format("READY", slots=slots, name=f"w{w.fd}", **extra))
        return w

    def say(self, conn, data):
        """conn sent data: each message to its handler; a refusal is an
        ERR to conn, as the server's dispatch answers it."""
        reader = wire.Reader()
        reader.feed(data)
        for msg in reader:
            try:
                self.table[conn.role, msg.verb](conn, msg)
            except wire.WireError as e:
                conn.out += e.reply()


def said(conn):
    """The messages conn was sent since last asked."""
    reader = wire.Reader()
    reader.feed(bytes(conn.out))
    conn.out.clear()
    return list(reader)


def test_a_run_goes_to_a_free_worker_and_its_done_back_to_the_client():
    hub = Hub()
    w = hub.worker(slots=1)
    c = hub.conn("client")
    hub.say(c, wire.format("RUN", "a", body=b"echo a") + wire.format("RUN", "b", body=b"true"))
    runs = said(w)
    assert [(m.verb, m.body) for m in runs] == [("RUN", b"echo a")]
    hid = runs[0].arg(0)
    hub.say(w, wire.format("DONE", hid, exit=3))
    done = said(c)
    assert [(m.verb, m.arg(0), m.get("exit")) for m in done] == [("DONE", "a", "3")]
    # The slot came back: the queued job went to the same worker.
    assert [(m.verb, m.body) for m in said(w)] == [("RUN", b"true")]
    assert hub.sessions.counts["done"] == 1


def test_output_is_relayed_and_acknowledged_once_the_client_buffer_is_low():
    hub = Hub()
    w = hub.worker()
    c = hub.conn("client")
    hub.say(c, wire.format("RUN", "7", body=b"yes"))
    hid = said(w)[0].arg(0)
    chunk = b"y\n" * (sched.ACK_EVERY // 2)
    hub.say(w, wire.format("OUT", hid, fd=1, body=chunk))
    assert c.low is not None        # asked to hear when the client's buffer drains
    assert said(w) == []            # no ACK before that
    out = said(c)
    assert [(m.verb, m.arg(0), m.get("fd"), m.body) for m in out] == [("OUT", "7", "1", chunk)]
    fn, c.low = c.low, None
    fn(c)
    acks = said(w)
    assert [(m.verb, m.arg(0), m.get("n")) for m in acks] == [("ACK", hid, str(len(chunk)))]


def test_a_worker_that_vanishes_ends_each_of_its_jobs_once_as_lost():
    hub = Hub()
    w = hub.worker(slots=2)
    c = hub.conn("client")
    hub.say(c, wire.format("RUN", "1", body=b"a") + wire.format("RUN", "2", body=b"b"))
    hub.server.close(w)
    done = said(c)
    assert sorted((m.arg(0), m.get("outcome")) for m in done) == [("1", "lost"), ("2", "lost")]
    assert hub.sessions.counts["lost"] == 2
    assert c.session.jobs == {}
    assert hub.sessions.idle()


def test_a_client_that_leaves_cancels_its_running_jobs_and_drops_its_queued_ones():
    hub = Hub()
    w = hub.worker(slots=1)
    c = hub.conn("client")
    hub.say(c, wire.format("RUN", "1", body=b"a") + wire.format("RUN", "2", body=b"b"))
    hid = said(w)[0].arg(0)
    hub.server.close(c)
    assert [(m.verb, m.arg(0)) for m in said(w)] == [("CANCEL", hid)]
    assert hub.sched.waiting() == 0


def test_kill_of_a_queued_job_ends_it_cancelled_by_the_signal():
    hub = Hub()
    c = hub.conn("client")
    hub.say(c, wire.format("RUN", "q", body=b"sleep 9") + wire.format("KILL", "q", sig=9))
    done = said(c)
    assert [(m.verb, m.arg(0), m.get("sig"), m.get("outcome")) for m in done] == [
        ("DONE", "q", "9", "cancelled")]
    assert hub.sched.waiting() == 0


def test_a_client_at_max_jobs_is_held_until_three_quarters_are_left():
    hub = Hub(max_jobs=8)
    w = hub.worker(slots=8)
    c = hub.conn("client")
    hub.say(c, b"".join(wire.format("RUN", str(i), body=b"true") for i in range(8)))
    assert c in hub.server.held
    hids = [m.arg(0) for m in said(w)]
    hub.say(w, wire.format("DONE", hids[0], exit=0))
    assert c in hub.server.held     # 7 of 8 left: not yet
    hub.say(w, wire.format("DONE", hids[1], exit=0))
    assert c not in hub.server.held


def test_input_to_a_full_worker_pauses_the_client_on_that_worker():
    hub = Hub()
    w = hub.worker()
    c = hub.conn("client")
    hub.say(c, wire.format("RUN", "1", stdin=1, body=b"cat"))
    w.out += b"x" * (sched.HIGH + 1)      # the worker reads nothing
    hub.say(c, wire.format("IN", "1", body=b"data"))
    assert hub.server.paused.get(c) is w


def test_a_silent_busy_worker_is_pinged_then_declared_dead():
    hub = Hub(heartbeat=1.0)
    w = hub.worker()
    c = hub.conn("client")
    hub.say(c, wire.format("RUN", "1", body=b"sleep 9"))
    said(w)
    w.last_rx = time.monotonic() - 1.5
    hub.server.fire(hub.sessions.tick)
    assert [m.verb for m in said(w)] == ["PING"]
    hub.server.fire(hub.sessions.tick)
    assert said(w) == []            # pinged once, not every tick
    w.last_rx = time.monotonic() - 3.5
    hub.server.fire(hub.sessions.tick)
    assert w.closing
    assert [(m.verb, m.get("outcome")) for m in said(c)] == [("DONE", "lost")]
    # Nobody busy: the heartbeat timer is not armed again.
    assert not [t for t in hub.server.timers if t.fn == hub.sessions.tick]


def test_jobs_no_worker_can_take_are_noted_to_their_client_once():
    hub = Hub()
    hub.worker(site="a")
    c = hub.conn("client")
    hub.say(c, wire.format("RUN", "1", body=b"x", **{"req.site": "b"}))
    hub.say(c, wire.format("RUN", "2", body=b"x", **{"req.site": "b"}))
    assert said(c) == []
    for job in c.session.jobs.values():
        job.queued_at -= NOTE_AFTER
    hub.server.fire(hub.sessions.note_unmatched)
    notes = said(c)
    assert [(m.verb, m.get("jobs")) for m in notes] == [("NOTE", "2")]
    assert "no connected worker is tagged site=b" in notes[0].get("text")
    hub.server.fire(hub.sessions.note_unmatched)
    assert said(c) == []


def test_a_durable_job_is_acknowledged_only_after_the_commit(tmp_path):
    hub = Hub(tmp_path)
    c = hub.conn("client")
    hub.say(c, wire.format("SUBMIT", ref="r1", body=b"echo hi"))
    assert said(c) == []            # not yet committed
    hub.server.end_turn()
    [job] = said(c)
    assert (job.verb, job.get("ref")) == ("JOB", "r1")
    assert hub.durable.journal.get(int(job.arg(0)))["state"] == "queued"


def test_a_durable_job_is_retried_then_its_result_stored_and_followed(tmp_path):
    hub = Hub(tmp_path)
    c = hub.conn("client")
    hub.say(c, wire.format("SUBMIT", retries=1, body=b"flaky"))
    hub.server.end_turn()
    did = said(c)[0].arg(0)
    w = hub.worker()
    hid = said(w)[0].arg(0)
    hub.say(w, wire.format("DONE", hid, exit=1))
    rerun = said(w)
    assert [m.verb for m in rerun] == ["RUN"]
    hid = rerun[0].arg(0)
    hub.say(w, wire.format("OUT", hid, fd=1, body=b"second\n"))
    hub.say(w, wire.format("DONE", hid, exit=0))
    hub.server.end_turn()
    row = hub.durable.journal.get(int(did))
    assert (row["state"], row["outcome"], row["tries"]) == ("done", "ok", 2)
    follower = hub.conn("client")
    hub.say(follower, wire.format("RESULT", did, wait=1))
    got = [m for chunk in follower.feeders[0] for m in _parse(chunk)]
    assert [(m.verb, m.body) for m in got] == [("OUT", b"second\n"), ("DONE", None)]
    assert got[1].get("exit") == "0"


def _parse(chunk):
    assert chunk is not None
    reader = wire.Reader()
    reader.feed(chunk)
    return list(reader)


def test_a_journal_that_cannot_write_refuses_the_submission(tmp_path):
    hub = Hub(tmp_path)
    c = hub.conn("client")
    j = hub.durable.journal
    # A full disk, as sqlite sees one: no page may be added.
    pages = j.db.execute("PRAGMA page_count").fetchone()[0]
    j.db.execute(f"PRAGMA max_page_count = {pages}")
    hub.say(c, wire.format("SUBMIT", body=b"x" * 20000))
    hub.server.end_turn()
    [err] = said(c)
    assert (err.verb, err.arg(0)) == ("ERR", str(wire.E_TEMPFAIL))
    assert hub.durable.problem
    assert [t for t in hub.server.timers if t.fn == hub.durable.retry]


def test_names_announce_lookup_and_go_with_their_connection():
    hub = Hub()
    a, b = hub.conn("client"), hub.conn("client")
    hub.say(b, wire.format("LOOKUP", "feed", wait=1))
    assert said(b) == []
    hub.say(a, wire.format("ANNOUNCE", "feed", "10.0.0.1:7800"))
    assert [(m.verb, m.args) for m in said(a)] == [("OK", ["feed"])]
    assert [(m.verb, m.args) for m in said(b)] == [("AT", ["feed", "10.0.0.1:7800"])]
    hub.server.close(a)
    hub.say(b, wire.format("LOOKUP", "feed"))
    assert [(m.verb, m.arg(0)) for m in said(b)] == [("ERR", str(wire.E_UNAVAILABLE))]


def test_status_counts_and_cancel_of_a_queued_session_job():
    hub = Hub()
    c = hub.conn("client")
    hub.say(c, wire.format("RUN", "1", body=b"true"))
    [job] = c.session.jobs.values()
    ctl = hub.conn("client")
    hub.say(ctl, wire.format("STATUS"))
    [info] = said(ctl)
    status = json.loads(info.body)
    assert (status["queued"], status["clients"], status["workers"]) == (1, 2, 0)
    hub.say(ctl, wire.format("CANCEL", job.name))
    assert [(m.verb, m.args) for m in said(ctl)] == [("OK", [job.name])]
    assert [(m.verb, m.arg(0), m.get("outcome")) for m in said(c)] == [
        ("DONE", "1", "cancelled")]


def test_every_verb_is_registered_once_with_known_roles():
    hub = Hub()
    seen = {}
    for s in hub.server.services:
        for verb, (fn, roles) in s.verbs.items():
            assert fn.__self__ is s, verb
            assert roles and set(roles) <= {"client", "worker"}, verb
            for role in roles:
                assert (role, verb) not in seen, f"{verb} twice for {role}"
                seen[role, verb] = s
    assert {"RUN", "SUBMIT", "STATUS", "ANNOUNCE"} <= {v for r, v in seen if r == "client"}
    assert {"READY", "OUT", "DONE", "ACK"} <= {v for r, v in seen if r == "worker"}
