"""Rooms (gridcat join): the service on the fake server of test_hub_services
(one order of views and messages, names, removal of the silent and of the
member that does not read), then real hubs and gridcat processes, one of
them killed with SIGKILL."""

import json
import signal
import socket
import subprocess
import time

import pytest

from gridtools.hub import rooms
from gridtools.hub.conn import Conn
from gridtools.hub.rooms import Rooms
from gridtools.hub.server import Options
from gridtools.proto import frames, wire

from hubfixtures import clean_env, grid, tool, wait_until  # noqa: F401
from test_hub_services import FakeServer, Sock, said


class Hub:
    def __init__(self, heartbeat=10.0):
        self.server = FakeServer()
        self.opts = Options(heartbeat=heartbeat)
        self.rooms = Rooms(self.server, self.opts)
        self.server.services = [self.rooms]
        self.fds = iter(range(100, 10000))

    def conn(self):
        c = Conn(Sock(next(self.fds)), f"peer{len(self.server.services)}")
        c.role = "client"
        return c

    def say(self, conn, data):
        reader = wire.Reader()
        reader.feed(data)
        for msg in reader:
            try:
                self.rooms.verbs[msg.verb][0](conn, msg)
            except wire.WireError as e:
                conn.out += e.reply()

    def join(self, room, name):
        c = self.conn()
        self.say(c, wire.format("JOIN", room, name=name))
        return c


def story(msgs):
    """What a member saw, as comparable tuples."""
    out = []
    for m in msgs:
        if m.verb == "VIEW":
            out.append(("view", int(m.get("seq")), int(m.get("view")), m.body.decode()))
        elif m.verb == "SAID":
            out += [("said", int(m.get("seq")) + i, int(m.get("view")), m.get("from"), x)
                    for i, x in enumerate(frames.unpack(m.body, int(m.get("n"))))]
        else:
            out.append((m.verb, *m.args, *sorted(m.kv.items())))
    return out


def test_members_see_one_order_of_views_and_messages():
    hub = Hub()
    a = hub.join("r", "a")
    assert story(said(a)) == [("OK", "r", ("name", "a"), ("view", "1")), ("view", 0, 1, "a")]
    b = hub.join("r", "b")
    c = hub.join("r", "c")
    for i in range(30):
        who = (a, b, c)[i % 3]
        hub.say(who, wire.format("SAY", "r", n=2, body=frames.pack([b"m%d" % i, b"x\ny"])))
    hub.say(b, wire.format("SAY", "r", body=b"one message, no n="))
    seen = [story(said(x)) for x in (a, b, c)]
    # b and c saw their own OK and the views from their own on; from the
    # view with all three, everyone's story is the same.
    start = [s.index(("view", 2, 3, "a b c")) for s in seen]
    tails = [s[i:] for s, i in zip(seen, start)]
    assert tails[0] == tails[1] == tails[2]
    assert [t[1] for t in tails[0]] == list(range(2, 2 + 61 + 1))
    assert tails[0][-1] == ("said", 63, 3, "b", b"one message, no n=")
    assert seen[0][0] == ("view", 1, 2, "a b")
    assert seen[2][:2] == [("OK", "r", ("name", "c"), ("view", "3")), ("view", 2, 3, "a b c")]


def test_a_member_that_goes_leaves_the_view_of_the_others():
    hub = Hub()
    a, b, c = hub.join("r", "a"), hub.join("r", "b"), hub.join("r", "c")
    for x in (a, b, c):
        said(x)
    hub.server.close(b)
    hub.say(c, wire.format("SAY", "r", body=b"after"))
    for x in (a, c):
        got = said(x)
        assert [(m.verb, m.get("view"), m.get("left"), m.get("why"), m.body) for m in got] == [
            ("VIEW", "4", "b", "gone", b"a c"), ("SAID", "4", None, None, b"5:after\n")]
    hub.say(a, wire.format("LEAVE", "r"))
    assert story(said(a)) == [("OK", "r", ("view", "5"))]
    assert [(m.get("left"), m.get("why"), m.body) for m in said(c)] == [("a", "left", b"c")]
    hub.say(a, wire.format("SAY", "r", body=b"x"))
    assert said(a)[0].args[0] == str(wire.E_DATA)
    hub.server.close(c)
    assert hub.rooms.rooms == {} and hub.rooms.joined == {}


def test_a_name_is_one_member_and_names_follow_the_rule():
    hub = Hub()
    a = hub.join("r", "a")
    said(a)
    other = hub.join("r", "a")
    err = said(other)
    assert err[0].verb == "ERR" and err[0].args[0] == str(wire.E_TEMPFAIL)
    assert said(a) == []                        # nothing changed for a
    hub.say(a, wire.format("JOIN", "r", name="a2"))
    assert said(a)[0].args[0] == str(wire.E_USAGE)     # one membership a room a connection
    for room, name in (("r", "bad name"), ("r", "-x"), ("r" * 65, "b"), ("r/x", "b"),
                       ("r", "²")):
        hub.say(other, wire.format("JOIN", room, name=name))
        e = said(other)[0]
        assert (e.verb, e.args[0]) == ("ERR", str(wire.E_USAGE)), (room, name)
    hub.say(other, wire.format("JOIN", "r"))
    assert said(other)[0].get("field") == "name"
    # The same name in another room is another member.
    hub.say(other, wire.format("JOIN", "s", name="a"))
    assert said(other)[0].verb == "OK"


def test_every_field_is_checked():
    hub = Hub()
    a = hub.join("r", "a")
    said(a)
    for bad in (wire.format("SAY", "r", n="0", body=b"1:x\n"),
                wire.format("SAY", "r", n="2", body=b"1:x\n"),
                wire.format("SAY", "r", n="٣", body=b"1:x\n"),
                wire.format("SAY", "r", n=str(frames.MAX_BATCH + 1), body=b"1:x\n"),
                wire.format("SAY", "r", n="1", body=b"01:x\n"),
                wire.format("SAY", "r", body=b"x" * (rooms.MAX_SAY + 1)),
                wire.format("SAY", "r")):
        hub.say(a, bad)
        got = said(a)
        assert [m.verb for m in got] == ["ERR"], (bad[:40], got)
        assert got[0].args[0] == str(wire.E_USAGE)
    assert hub.rooms.rooms["r"].seq == 1            # nothing was said


def test_a_member_that_does_not_read_is_removed_and_told():
    hub = Hub()
    slow, fast = hub.join("r", "slow"), hub.join("r", "fast")
    said(fast)
    big = frames.pack([b"x" * 60000])
    n = 0
    while "slow" in hub.rooms.rooms["r"].members:
        hub.say(fast, wire.format("SAY", "r", n=1, body=big))
        got = said(fast)                        # fast keeps up
        n += 1
        assert n < 1000
    # Never more than the bound waits for it, then its GONE.
    assert len(slow.out) <= rooms.MEMBER_BUFFER + 200
    last = said(slow)[-1]
    assert (last.verb, last.args, last.get("why"), last.get("view")) == \
        ("GONE", ["r"], "behind", "3")
    # fast had the message slow missed, then the view without slow.
    assert [m.verb for m in got] == ["SAID", "VIEW"]
    assert (got[1].get("left"), got[1].get("why"), got[1].get("view"), got[1].body) == \
        ("slow", "behind", "3", b"fast")
    hub.say(fast, wire.format("SAY", "r", n=1, body=big))
    assert [m.verb for m in said(fast)] == ["SAID"]
    assert slow.out == b""                      # nothing more for it
    hub.say(slow, wire.format("SAY", "r", body=b"hi"))
    assert said(slow)[0].args[0] == str(wire.E_DATA)


def test_a_silent_member_is_pinged_then_closed_after_three_heartbeats():
    hub = Hub(heartbeat=2.0)
    a, b = hub.join("r", "a"), hub.join("r", "b")
    said(a), said(b)
    (timer,) = [t for t in hub.server.timers if t.fn == hub.rooms.tick]
    assert timer.delay == 1.0                   # min(1 s, half a heartbeat)
    now = time.monotonic()
    a.last_rx = now - 2.5
    b.last_rx = now
    hub.server.fire(hub.rooms.tick)
    assert said(a) == [wire.Message("PING")] and said(b) == []
    hub.server.fire(hub.rooms.tick)
    assert said(a) == []                        # once per silence
    a.last_rx = now - 6.5                       # three heartbeats and more
    hub.server.fire(hub.rooms.tick)
    assert a.closing
    assert [(m.get("left"), m.get("why")) for m in said(b)] == [("a", "silent")]
    hub.server.close(b)
    hub.server.fire(hub.rooms.tick)
    assert not [t for t in hub.server.timers if t.fn == hub.rooms.tick]  # nobody left


def test_rooms_lists_members_oldest_first():
    hub = Hub()
    c = hub.conn()
    for name in ("b", "a", "c"):
        hub.join("r", name)
    hub.say(c, wire.format("ROOMS"))
    (info,) = said(c)
    assert json.loads(info.body) == [{"name": "r", "view": 3, "seq": 3, "count": 3,
                                      "members": ["b", "a", "c"]}]


def fake_member(*lines):
    """A Membership whose hub is a socketpair that already said lines."""
    from gridtools.hub import client as hubclient
    from gridtools.io import net
    ours, theirs = socket.socketpair()
    theirs.sendall(wire.format("OK", "r", name="a", view=1) + b"".join(lines))
    c = hubclient.Client.__new__(hubclient.Client)
    c.hub, c.chan = "fake", net.Channel(ours, "fake")
    return hubclient.Membership(c, "r", "a"), theirs


@pytest.mark.parametrize("line", [
    wire.format("VIEW", "r", seq=0, view=1, n=2, body=b"a"),
    wire.format("VIEW", "r", seq=0, view=1, n=1, body=b"a:b"),
    wire.format("VIEW", "r", seq=0, view=1, n=1, left="b", body=b"a"),
    wire.format("VIEW", "r", seq=0, view=1, n=1, left="b", why="bored", body=b"a"),
    wire.format("VIEW", "r", seq="-1", view=1, n=1, body=b"a"),
    wire.format("SAID", "r", seq=0, view=1, n=1, body=b"1:x\n", **{"from": "a b"}),
    wire.format("SAID", "r", seq=0, view=1, n=2, body=b"1:x\n", **{"from": "b"}),
    wire.format("GONE", "r", view=2),
    wire.format("MSG", "r", off=0, n=1, body=b"1:x\n"),
])
def test_the_client_checks_what_the_hub_says_in_a_room(line):
    from gridtools.proto import errors
    room, hub = fake_member(line)
    with pytest.raises(errors.ProtocolError):
        room.next(5)
    hub.close()


def test_the_client_answers_pings_and_reads_a_room():
    room, hub = fake_member(
        b"PING\n", wire.format("VIEW", "r", seq=0, view=1, n=1, joined="a", body=b"a"),
        wire.format("SAID", "r", seq=1, view=1, n=2, body=b"1:x\n0:\n", **{"from": "a"}),
        wire.format("GONE", "r", view=2, why="behind"))
    assert room.view == 1
    assert room.next(5) == ("view", 0, 1, ["a"], "a", None)
    assert hub.recv(100) == b"JOIN r name=a\nPONG\n"
    assert room.next(5) == ("said", 1, 1, [b"x", b""], "a", None)
    assert room.next(5) == ("gone", 0, 2, (), None, "behind")
    assert room.next(0) is None
    hub.close()


# -- real processes --------------------------------------------------------------

def member(g, room, name, *args, stdout=None):
    p = subprocess.Popen([*tool("gridcat"), "join", room, "--name", name, *args],
                         stdin=subprocess.PIPE, stdout=stdout or subprocess.PIPE,
                         stderr=subprocess.PIPE, env=clean_env(GRID_HUB=g.addr))
    g.procs.append(p)
    return p


def rooms_now(g):
    from gridtools.hub import client as hubclient
    c = hubclient.Client(g.addr, g.client_env)
    try:
        return {r["name"]: r for r in hubclient.rooms(c)}
    finally:
        c.close()


def members(g, room):
    return rooms_now(g).get(room, {}).get("members")


def lines(path):
    with open(path, "rb") as f:
        return f.read().splitlines()


def test_three_members_one_killed_the_survivors_agree(grid, tmp_path):
    grid.start_hub()
    outs = {n: open(tmp_path / f"{n}.out", "w+b") for n in "abc"}
    procs = {}
    for n in "abc":
        procs[n] = member(grid, "crew", n, "-n", "5", stdout=outs[n])
        assert wait_until(lambda: (members(grid, "crew") or [])[-1:] == [n])
    for n in "abc":
        procs[n].stdin.write(b"hello from %s\n" % n.encode())
        procs[n].stdin.flush()
    for n in "abc":
        assert wait_until(lambda: sum(b": hello" in x for x in lines(tmp_path / f"{n}.out"))
                          == 3), lines(tmp_path / f"{n}.out")
    procs["c"].kill()
    procs["c"].wait()
    for n in "ab":
        assert wait_until(lambda: b"view 4: a b" in lines(tmp_path / f"{n}.out"))
        procs[n].stdin.write(b"after c, %s\n" % n.encode())
        procs[n].stdin.flush()
    assert [procs[n].wait(30) for n in "ab"] == [0, 0]
    a, b = lines(tmp_path / "a.out"), lines(tmp_path / "b.out")
    assert a[:2] == [b"view 1: a", b"view 2: a b"] and b[0] == b"view 2: a b"
    # From the view all three were in, the two survivors saw one story.
    assert a[2:] == b[1:]
    story = a[2:]
    assert story[0] == b"view 3: a b c" and story[4] == b"view 4: a b"
    assert sorted(story[1:4]) == [b"a: hello from a", b"b: hello from b", b"c: hello from c"]
    assert sorted(story[5:]) == [b"a: after c, a", b"b: after c, b"]
    assert wait_until(lambda: "crew" not in rooms_now(grid))


def test_a_late_member_sees_a_view_with_itself_and_a_name_is_one_member(grid):
    grid.start_hub()
    first = member(grid, "r", "first", "--json")
    assert json.loads(first.stdout.readline()) == {"room": "r", "seq": 0, "view": 1,
                                                   "members": ["first"], "joined": "first"}
    late = member(grid, "r", "late")
    assert late.stdout.readline() == b"view 2: first late\n"
    r = grid.run("gridcat", "join", "r", "--name", "late", input=b"")
    assert r.returncode == 75, r
    assert b"late is in r already" in r.stderr
    late.stdin.write(b"hi\n")
    late.stdin.close()
    assert late.stdout.readline() == b"late: hi\n"
    assert json.loads(first.stdout.readline()) == {"room": "r", "seq": 1, "view": 2,
                                                   "members": ["first", "late"],
                                                   "joined": "late"}
    assert json.loads(first.stdout.readline()) == {"room": "r", "seq": 2, "view": 2,
                                                   "from": "late", "message": "hi"}
    r = grid.run("gridcat", "ls")
    assert r.stdout.splitlines()[-1].split() == [b"room", b"r", b"-", b"-", b"-", b"3", b"2",
                                                b"view", b"2:", b"first", b"late"]
    late.kill()
    late.wait()
    assert json.loads(first.stdout.readline()) == {"room": "r", "seq": 3, "view": 3,
                                                   "members": ["first"], "left": "late",
                                                   "why": "gone"}


def test_exit_at_end_leaves_once_its_lines_came_back(grid):
    grid.start_hub()
    watcher = member(grid, "r", "w")
    assert watcher.stdout.readline() == b"view 1: w\n"
    r = grid.run("gridcat", "join", "r", "--name", "p", "-e", "-0",
                 input=b"one\0two\nlines\0")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"view 2: w p\0p: one\0p: two\nlines\0"
    assert [watcher.stdout.readline() for _ in range(4)] == [
        b"view 2: w p\n", b"p: one\n", b"p: two\n", b"lines\n"]
    assert watcher.stdout.readline() == b"view 3: w\n"


def test_a_member_that_does_not_read_leaves_the_view_and_is_told(grid, tmp_path):
    grid.start_hub("--heartbeat", "60")     # removed for its backlog, not its silence
    # A raw member with a small receive buffer that reads nothing.
    host, port = grid.addr.rsplit(":", 1)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, int(port)))
    f = s.makefile("rb")
    f.readline()
    s.sendall(wire.hello("client", wire.new_nonce()) + wire.format("JOIN", "r", name="slow"))
    assert f.readline().startswith(b"WELCOME")
    out = open(tmp_path / "fast.out", "w+b")
    fast = member(grid, "r", "fast", stdout=out)
    line = b"y" * 999 + b"\n"
    sent = 0
    while b"view 3: fast" not in lines(tmp_path / "fast.out"):
        fast.stdin.write(line * 1000)
        sent += 1
        assert sent < 200, "1000 lines of 1000 bytes at a time: 200 MB and still a member"
    fast.stdin.close()
    # It reads at last: the backlog (at most the hub's bound), then GONE.
    data = b""
    while b"\nGONE r " not in data:
        chunk = s.recv(1 << 16)
        assert chunk, data[-200:]
        data += chunk
    gone = data[data.index(b"\nGONE r ") + 1:].split(b"\n")[0]
    assert gone == b"GONE r view=3 why=behind"
    assert len(data) < rooms.MEMBER_BUFFER + 8 * (1 << 20)    # the bound and the kernel's
    s.close()
    fast.send_signal(signal.SIGTERM)
    fast.wait(30)


def test_a_stopped_member_leaves_the_view_after_the_heartbeat(grid):
    grid.start_hub("--heartbeat", "2")
    a = member(grid, "r", "a")
    assert a.stdout.readline() == b"view 1: a\n"
    b = member(grid, "r", "b")
    assert a.stdout.readline() == b"view 2: a b\n"
    b.send_signal(signal.SIGSTOP)
    try:
        assert a.stdout.readline() == b"view 3: a\n"
    finally:
        b.send_signal(signal.SIGCONT)
    assert b.wait(30) == 69                     # the hub closed it
    assert b"closed the connection" in b.stderr.read()
    # a, pinged through all of it, is still there.
    assert members(grid, "r") == ["a"]
