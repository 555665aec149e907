"""Hostile peers against a real gridd hub on 127.0.0.1: raw bytes on plain
sockets, as a client and as a worker, before and after HELLO.

Whatever a peer sends, the hub answers with an ERR (naming the bad field),
stays alive, and keeps serving real work: after each case a real
`gridmap --hub` run must still print 1..5.  Also here: a mutator driven by
hypothesis over every verb of both roles, a client that never reads, and a
journal on a full disk.
"""

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from hubfixtures import Grid, clean_env, tool
from gridtools.hub import client as hubclient
from gridtools.proto import wire

SEQ5 = b"1\n2\n3\n4\n5\n"
RSS_SLACK_MB = 50           # how much the hub may grow while it is abused
BIG_OUTPUT = b"yes | head -c 20000000"


# -- a raw peer ----------------------------------------------------------------

class Peer:
    """A plain socket to the hub that reads whole messages (wire.Reader)."""

    def __init__(self, g, timeout=5.0, rcvbuf=None):
        self.g = g                  # the Grid whose hub it talks to
        host, port = g.addr.rsplit(":", 1)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Set before connecting, so the window the hub sees is small.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, int(port)))
        self.reader = wire.Reader()
        self.eof = False
        self.hello = self.recv(timeout)

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        """Read what arrives before deadline; False when nothing came."""
        left = deadline - time.monotonic()
        if left <= 0 or self.eof:
            return False
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(1 << 16)
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.reader.feed(data)
        return True

    def _next(self):
        try:
            return next(self.reader)
        except StopIteration:
            return None
        except wire.WireError as e:
            raise AssertionError(f"the hub sent a message that breaks the grammar: {e}")

    def recv(self, timeout=5.0):
        """The next message; AssertionError if none comes in time."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self._next()
            if msg is not None:
                return msg
            if not self._fill(deadline):
                why = "closed the connection" if self.eof else f"said nothing for {timeout}s"
                raise AssertionError(f"expected a message, but the hub {why}; "
                                     f"{hub_state(self.g)}")

    def recv_verb(self, verb, timeout=5.0):
        """Skip messages until one with verb; the ones skipped and it."""
        seen = []
        while True:
            msg = self.recv(timeout)
            seen.append(msg)
            if msg.verb == verb:
                return msg, seen

    def welcome(self, role):
        self.send(wire.hello(role, wire.new_nonce()))
        msg = self.recv()
        assert msg.verb == "WELCOME", f"HELLO as {role} answered with {msg}"
        return msg

    def drain(self, timeout=3.0):
        """Say we are done (shutdown for writing); every message until the
        hub closes, or until timeout."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        deadline = time.monotonic() + timeout
        got = []
        while True:
            msg = self._next()
            if msg is not None:
                got.append(msg)
            elif not self._fill(deadline):
                return got

    def close(self):
        self.sock.close()


def client(g):
    p = Peer(g)
    p.welcome("client")
    return p


def worker(g, name, tag=None):
    p = Peer(g)
    p.welcome("worker")
    kv = {} if tag is None else {"tag.fake": tag}
    p.send(wire.format("READY", slots=1, name=name, **kv))
    return p


def fake_worker_with_job(g, tag):
    """A raw worker holding a real client's job; (worker, client, hid)."""
    w = worker(g, f"fake-{tag}", tag)
    c = client(g)
    c.send(wire.format("RUN", "1", body=b"echo fake", **{"req.fake": tag}))
    run, _ = w.recv_verb("RUN")
    return w, c, run.arg(0)


def expect_err(peer, field=None):
    msg = peer.recv()
    assert msg.verb == "ERR", f"expected an ERR, got {msg}"
    if field is not None:
        assert msg.get("field") == field, f"ERR does not name field={field}: {msg}"
    return msg


def ping(peer):
    peer.send(b"PING\n")
    msg, seen = peer.recv_verb("PONG")
    return seen[:-1]


# -- is the hub still well? ------------------------------------------------------

def log_tail(g, lines=30):
    with open(g.hub.logpath, "rb") as f:
        return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")


def hub_state(g):
    time.sleep(0.2)                 # a dying hub: let it finish dying
    state = "is alive" if g.hub.poll() is None else f"exited {g.hub.returncode}"
    return f"the hub {state}; its log ends:\n{log_tail(g)}"


def assert_alive(g):
    assert g.hub.poll() is None, f"the hub exited {g.hub.returncode}:\n{log_tail(g)}"


def status(g, timeout=10.0):
    """A STATUS round trip on a fresh connection; the decoded INFO body."""
    c = hubclient.Client(g.addr, clean_env(), timeout=timeout)
    try:
        c.send(b"STATUS\n")
        msg = c.recv(timeout)
    finally:
        c.close()
    assert msg.verb == "INFO", msg
    return json.loads(msg.body)


def ctl_json(g, what):
    r = g.run("gridd", "ctl", "--hub", g.addr, "--json", what, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def gridmap_works(g):
    """seq 5 | gridmap -k --hub ADDR echo prints 1..5."""
    r = subprocess.run([*tool("gridmap"), "-k", "--hub", g.addr, "echo"], input=SEQ5,
                       capture_output=True, env=clean_env(), timeout=60, cwd=g.tmp)
    assert (r.stdout, r.returncode) == (SEQ5, 0), \
        f"gridmap --hub: {r.stderr.decode(errors='replace')}\nhub log:\n{log_tail(g)}"


def assert_serves(g):
    assert_alive(g)
    status(g)
    gridmap_works(g)
    assert_alive(g)


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        kb = next(int(x.split()[1]) for x in f if x.startswith("VmRSS:"))
    return kb // 1024


def real_workers(g):
    """name -> peer of the workers the hub lists."""
    return {w["name"]: w["peer"] for w in g.ctl("workers")}


def submit_true(peer):
    """A valid durable SUBMIT on peer; its job id as an int.  Ids come from
    the journal in order, so two in a row tell whether anything was
    journaled between them."""
    peer.send(wire.format("SUBMIT", body=b"true"))
    msg, seen = peer.recv_verb("JOB")
    return int(msg.arg(0))


def start_grid(g, *hub_args, slots=2):
    g.start_hub(*hub_args)
    g.start_worker(slots=slots, name="real")
    gridmap_works(g)


# -- named regressions: one hub for all of them ------------------------------------

@pytest.fixture(scope="module")
def target(tmp_path_factory):
    g = Grid(tmp_path_factory.mktemp("target"))
    try:
        start_grid(g)
        yield g
    finally:
        g.close()


@pytest.fixture
def hub(target):
    """The shared hub, started afresh if an earlier case killed it or its
    real worker."""
    if target.hub.poll() is not None or "real" not in real_workers(target):
        target.close()
        target.port = 0
        start_grid(target)
    target.real_peer = real_workers(target)["real"]
    return target


def assert_unharmed(g):
    """Alive, serving, and its real worker never dropped (same connection)."""
    assert_serves(g)
    assert real_workers(g).get("real") == g.real_peer, "the real worker was dropped"


def test_bad_byte_count_before_hello(hub):
    p = Peer(hub)
    p.send(b"X bytes=%C2%B2\n")
    expect_err(p, "bytes")
    p.close()
    assert_unharmed(hub)


BAD_REQUESTS = [
    ("result-unicode-digit", b"RESULT %C2%B2\n", "id"),
    ("forget-unicode-digit", b"FORGET %C2%B2\n", "id"),
    ("cancel-session-unicode-digit", b"CANCEL s%C2%B2\n", "id"),
    ("submit-retries-unicode-digit", b"SUBMIT retries=%C2%B9 bytes=4\ntrue", "retries"),
    ("result-huge-id", b"RESULT 99999999999999999999\n", "id"),
    ("run-timeout-inf", b"RUN 1 timeout=inf bytes=4\ntrue", "timeout"),
    ("run-timeout-1e999", b"RUN 1 timeout=1e999 bytes=4\ntrue", "timeout"),
    ("run-timeout-huge", b"RUN 1 timeout=99999999999 bytes=4\ntrue", "timeout"),
    ("submit-timeout-nan", b"SUBMIT timeout=nan bytes=4\ntrue", "timeout"),
]


@pytest.mark.parametrize("data, field", [c[1:] for c in BAD_REQUESTS],
                         ids=[c[0] for c in BAD_REQUESTS])
def test_bad_client_request(hub, data, field):
    p = client(hub)
    p.send(data)
    expect_err(p, field)
    assert not [m for m in ping(p) if m.verb in ("DONE", "JOB")], "a refused job ran"
    p.close()
    assert_unharmed(hub)


def test_kill_with_a_unicode_signal(hub):
    p = client(hub)
    p.send(wire.format("RUN", "7", body=b"sleep 30"))
    p.send(b"KILL 7 sig=%C2%B2\n")
    expect_err(p, "sig")
    p.send(b"KILL 7 sig=9\n")
    done, seen = p.recv_verb("DONE", timeout=15)
    assert (done.arg(0), done.get("sig")) == ("7", "9"), seen
    p.close()
    assert_unharmed(hub)


@pytest.mark.parametrize("timeout", ["nan", "inf", "1e999", "-1", "0", "%C2%B2", "99999999999"])
def test_bad_durable_submit_is_never_journaled(hub, timeout):
    p = client(hub)
    first = submit_true(p)
    submitted = status(hub)["submitted"]
    p.send(b"SUBMIT timeout=%s bytes=4\ntrue" % timeout.encode())
    expect_err(p, "timeout")
    assert not [m for m in ping(p) if m.verb == "JOB"], "a refused SUBMIT was acknowledged"
    st_ = ctl_json(hub, "status")
    assert st_["submitted"] == submitted, st_
    assert submit_true(p) == first + 1, "a refused SUBMIT took a journal id"
    p.close()
    hub.wait_for(lambda s: (s["durable"], s["queued"]) == (0, 0), "status")
    assert not [j for j in ctl_json(hub, "jobs") if j["kind"] == "durable"]
    assert_unharmed(hub)


def test_ready_with_unicode_slots(hub):
    p = Peer(hub)
    p.welcome("worker")
    p.send(b"READY slots=%C2%B2\n")
    expect_err(p, "slots")
    p.close()
    assert_unharmed(hub)


def test_done_for_a_unicode_job_id(hub):
    p = worker(hub, "fake-done")
    p.send(b"DONE %C2%B2 exit=0\n")
    expect_err(p, "id")
    p.close()
    assert_unharmed(hub)


def test_files_for_jobs_that_take_none_and_basefiles_over_the_limit(hub):
    """gridmap -S's staging verbs from a client: a FILE or STAGE for a job
    not run with stage=1, a path with "..", a basefile past the hub's
    limit or out of order: each an ERR naming the field, nothing relayed."""
    c = client(hub)
    c.send(wire.format("RUN", "1", body=b"sleep 5"))
    c.send(wire.format("FILE", "1", path="f", end=1, body=b"x"))
    assert "stage=1" in expect_err(c).args[1]
    c.send(wire.format("STAGE", "1", wd="a/../../b", files=0))
    expect_err(c, "path")
    c.send(wire.format("BASE", path="b", sha256="0" * 64, size=wire.MAX_BASE_BYTES + 1,
                       off=0, body=b"x"))
    expect_err(c)
    c.send(wire.format("BASE", path="b", sha256="0" * 64, size=3, off=2, body=b"x"))
    expect_err(c, "off")
    c.send(wire.format("BASE", path="b", sha256="0" * 64, size=3, off=0, end=1, body=b"x"))
    expect_err(c, "size")
    c.send(wire.format("KILL", "1", sig=9))
    c.close()
    assert_unharmed(hub)


def test_out_for_no_job_with_a_unicode_fd(hub):
    p = worker(hub, "fake-out")
    p.send(b"OUT 1 fd=%C2%B2 bytes=1\nx")
    expect_err(p)
    p.close()
    assert_unharmed(hub)


WORKER_FIELDS = [
    ("out-fd", b"OUT {hid} fd=%C2%B2 bytes=1\nx", "fd"),
    ("done-exit", b"DONE {hid} exit=%C2%B2\n", "exit"),
    ("done-sig", b"DONE {hid} sig=%C2%B9\n", "sig"),
    ("done-huge-exit", b"DONE {hid} exit=99999999999999999999\n", "exit"),
    ("ack-n", b"ACK {hid} n=%C2%B2\n", "n"),
]


@pytest.mark.parametrize("data, field", [c[1:] for c in WORKER_FIELDS],
                         ids=[c[0] for c in WORKER_FIELDS])
def test_bad_field_about_a_running_job(hub, data, field):
    """A worker's bad field about a job it really runs: an ERR naming the
    field, and the job's client still gets exactly one DONE."""
    tag = f"t{os.getpid()}{field}"
    w, c, hid = fake_worker_with_job(hub, tag)
    w.send(data.replace(b"{hid}", hid.encode()))
    expect_err(w, field)
    w.send(wire.format("DONE", hid, exit=0))
    w.drain()
    w.close()
    done, seen = c.recv_verb("DONE", timeout=15)
    assert done.arg(0) == "1", seen
    assert not [m for m in ping(c) if m.verb == "DONE"], "a job ended twice"
    c.close()
    assert_unharmed(hub)


# -- the mutator ----------------------------------------------------------------
#
# Valid messages of every verb of both roles, then mutated.  SHUTDOWN and
# DRAIN are left out: they stop things on purpose.

BATCH = 25                  # messages between two health checks
BATCHES = int(os.environ.get("GRID_MUTATOR_BATCHES", "200"))  # hypothesis examples, each a batch
GRIDMAP_EVERY = 6           # batches between two real gridmap runs

SAFE_BODIES = [b"true", b"echo fuzz", b"printf x", b"exit 3", b"cat"]
INTERESTING = [
    "", "0", "-1", "-0", "+1", "1.5", "0x10", "1_0", " ", "1e3", "%C2%B2", "%C2%B9",
    "%D9%A3", "%EF%BC%91", "%F0%9D%9F%99", "inf", "-inf", "nan", "NaN", "1e999", "1e-999",
    "9223372036854775807", "9223372036854775808", "18446744073709551616",
    "99999999999999999999", "4611686018427387905", "16777217", "%00", "%zz", "%", "=",
    "a", "9" * 300, "9" * 5000,
]
JUNK = [b" ", b"=", b"%", b"\n", b"\r\n", b"\x00", b"\xff", b"%C2%B2", b" x=1", b" bytes=3",
        b"\nPING\n", b"\t", b"=="]
NUMBER = st.one_of(st.sampled_from(INTERESTING),
                   st.integers(-(1 << 70), 1 << 70).map(str))
POSITION = st.integers(0, 1 << 16)
MUTATION = st.one_of(
    st.tuples(st.just("flip"), POSITION, st.integers(1, 255)),
    st.tuples(st.just("insert"), POSITION,
              st.one_of(st.sampled_from(JUNK), st.binary(min_size=1, max_size=8))),
    st.tuples(st.just("delete"), POSITION, st.integers(1, 8)),
    st.tuples(st.just("truncate"), POSITION),
    st.tuples(st.just("number"), st.integers(0, 16), NUMBER),
    st.tuples(st.just("value"), st.integers(0, 16), NUMBER),
    st.tuples(st.just("dupkey"), st.integers(0, 16)),
    st.tuples(st.just("bodylen"), st.sampled_from(
        ["-1", "+1", "+7", "0", "16777216", "16777217", "999999999999", "%C2%B2", "-5"])),
    st.tuples(st.just("twice"),),
)

CID = st.sampled_from(["1", "2", "7", "a.b", "{hid}"])
DID = st.one_of(st.integers(0, 40).map(str), st.just("{hid}"))
SECS = st.sampled_from(["0.5", "1", "30", "2.25"])
NAME = st.sampled_from(["fuzz", "f.1", "a-b"])
TOPIC = st.sampled_from(["t", "q.1"])
PATH = st.sampled_from(["f", "d/f", "/tmp/gridtest-fuzz"])
PIECE = {"mode": st.just("644"), "off": st.sampled_from(["0", "3"]), "end": st.just("1")}


def template(verb, args=(), kv=None, optional=None, body=None):
    """A strategy for (verb, args, kv, body): a valid message."""
    return st.tuples(st.just(verb), st.tuples(*args),
                     st.fixed_dictionaries(kv or {}, optional=optional or {}),
                     st.just(None) if body is None else body)


JOB_OPTIONS = {"argv": st.just("1"), "timeout": SECS, "req.site": st.just("lab")}
CLIENT_VERBS = {
    "RUN": template("RUN", [CID], optional={**JOB_OPTIONS, "stdin": st.just("1")},
                    body=st.sampled_from(SAFE_BODIES)),
    "IN": template("IN", [CID], optional={"eof": st.just("1")}, body=st.binary(max_size=64)),
    "KILL": template("KILL", [CID], {"sig": st.sampled_from(["9", "15", "1"])}),
    "SUBMIT": template("SUBMIT", optional={**JOB_OPTIONS,
                                           "retries": st.integers(0, 3).map(str),
                                           "ref": st.sampled_from(["0", "r.1"])},
                       body=st.sampled_from(SAFE_BODIES)),
    "RESULT": template("RESULT", [DID], optional={"wait": st.just("1")}),
    "FORGET": template("FORGET", [DID]),
    "CANCEL": template("CANCEL", [st.one_of(DID, DID.map(lambda d: "s" + d))]),
    "STATUS": template("STATUS"),
    "WORKERS": template("WORKERS"),
    "JOBS": template("JOBS"),
    "RESULTS": template("RESULTS"),
    "ANNOUNCE": template("ANNOUNCE", [NAME, st.just("127.0.0.1:9")]),
    "LOOKUP": template("LOOKUP", [NAME], optional={"wait": st.just("1")}),
    "PUB": template("PUB", [TOPIC], optional={"keep": st.just("5"), "durable": st.just("1"),
                                              "keepbytes": st.just("100")},
                    body=st.sampled_from([b"hello", b"x" * 70])),
    "SUB": template("SUB", [st.one_of(TOPIC, st.just("_events"))],
                    optional={"from": st.sampled_from(["begin", "end", "0", "-3"]),
                              "name": NAME, "end": st.just("1")}),
    "SEEN": template("SEEN", [TOPIC, NAME], {"off": st.sampled_from(["0", "1", "5"])}),
    "PUT": template("PUT", [TOPIC], optional={"n": st.just("2")},
                    body=st.sampled_from([b"one", b"3:one\n3:two\n"])),
    "TAKE": template("TAKE", [TOPIC], optional={"n": st.just("2"), "match": st.just("^o"),
                                                "end": st.just("1")}),
    "GOT": template("GOT", [TOPIC], optional={"more": st.just("1")},
                    body=st.sampled_from([b"1", b"1 2", b""])),
    "READ": template("READ", [TOPIC], optional={"match": st.just("t"), "wait": st.just("1")}),
    "STREAMS": template("STREAMS"),
    "JOIN": template("JOIN", [TOPIC], {"name": NAME}),
    "SAY": template("SAY", [TOPIC], optional={"n": st.just("2")},
                    body=st.sampled_from([b"hi", b"2:hi\n3:you\n"])),
    "LEAVE": template("LEAVE", [TOPIC]),
    "ROOMS": template("ROOMS"),
    "PING": template("PING"),
    "PONG": template("PONG"),
    "QUIT": template("QUIT"),
    "ERR": template("ERR"),
    "STAGE": template("STAGE", [CID], optional={"wd": PATH, "cleanup": st.just("1"),
                                                "wdrm": st.just("1"),
                                                "files": st.sampled_from(["0", "1"])},
                      body=st.sampled_from([b"", b"out", b"a\0b/c"])),
    "FILE": template("FILE", [CID], {"path": PATH}, optional=PIECE,
                     body=st.binary(max_size=64)),
    "BASE": template("BASE", kv={"path": PATH, "sha256": st.just("0" * 64),
                                 "size": st.sampled_from(["0", "3"])},
                     optional=PIECE, body=st.sampled_from([b"", b"abc"])),
}
WID = st.sampled_from(["1", "{hid}"])
WORKER_VERBS = {
    "READY": template("READY", kv={"slots": st.integers(1, 4).map(str), "name": NAME},
                      optional={"tag.site": st.just("lab"), "pid": st.just("123")}),
    "OUT": template("OUT", [WID], {"fd": st.sampled_from(["1", "2"])},
                    body=st.binary(max_size=64)),
    "DONE": template("DONE", [WID], optional={
        "exit": st.integers(0, 255).map(str), "sig": st.integers(1, 64).map(str),
        "outcome": st.sampled_from(["ok", "failed", "signal", "timeout", "cancelled", "lost"])}),
    "ACK": template("ACK", [WID], {"n": st.integers(0, 1 << 20).map(str)}),
    "FILE": template("FILE", [WID], {"path": PATH}, optional=PIECE,
                     body=st.binary(max_size=64)),
    "WANT": template("WANT", kv={"path": PATH, "sha256": st.just("0" * 64)}),
    "PING": template("PING"),
    "PONG": template("PONG"),
    "QUIT": template("QUIT"),
    "ERR": template("ERR"),
}


def test_the_mutator_covers_every_verb_the_hub_handles():
    """A verb added to the hub is mutated here too (only SHUTDOWN and DRAIN,
    which stop things by design, are left out)."""
    from gridtools.hub.server import Hub, Options
    hub = Hub(Options())            # builds its tables; listens on nothing
    try:
        tables = hub.handlers
    finally:
        hub.close_loop()
    assert set(CLIENT_VERBS) == set(tables["client"]) - {"SHUTDOWN", "DRAIN"}
    assert set(WORKER_VERBS) == set(tables["worker"])
HELLO = template("HELLO", [st.sampled_from(["1", "2"])],
                 {"role": st.sampled_from(["client", "worker", "hub"]),
                  "nonce": st.just("ab" * 32)})
ALL_VERBS = {**CLIENT_VERBS, **WORKER_VERBS}


def of(table):
    return st.sampled_from(sorted(table)).flatmap(lambda v: table[v])


# mode -> the messages it mutates.  "paired": a raw worker holding a real
# client's job, so {hid} names a job the hub really gave it.
MODES = {
    "bare": st.one_of(HELLO, of(ALL_VERBS)),
    "client": st.one_of(of(CLIENT_VERBS), of(CLIENT_VERBS), of(WORKER_VERBS)),
    "client+run": of(CLIENT_VERBS),
    "worker": st.one_of(of(WORKER_VERBS), of(WORKER_VERBS), of(CLIENT_VERBS)),
    "worker+ready": of(WORKER_VERBS),
    "paired": st.sampled_from(["OUT", "DONE", "ACK"]).flatmap(lambda v: WORKER_VERBS[v]),
}
EXAMPLE = st.sampled_from(sorted(MODES)).flatmap(
    lambda mode: st.tuples(st.just(mode), MODES[mode], st.lists(MUTATION, max_size=3)))


def render(msg, hid):
    verb, args, kv, body = msg
    if verb == "ERR":
        return wire.error(64, "fuzz says no")
    data = wire.format(verb, *args, body=body, **kv)
    return data.replace(b"{hid}", hid.encode())


def _nth(pattern, data, k):
    found = list(re.finditer(pattern, data))
    return found[k % len(found)] if found else None


def mutate(data, op):
    kind, *a = op
    n = len(data) + 1
    if kind == "flip":
        if not data:
            return data
        i = a[0] % len(data)
        return data[:i] + bytes((data[i] ^ a[1],)) + data[i + 1:]
    if kind == "insert":
        i = a[0] % n
        return data[:i] + a[1] + data[i:]
    if kind == "delete":
        i = a[0] % n
        return data[:i] + data[i + a[1]:]
    if kind == "truncate":
        return data[:a[0] % n]
    if kind == "twice":
        return data + data
    if kind == "dupkey":
        m = _nth(rb" [a-z][a-z0-9_.-]*=[^ \n]*", data, a[0])
        return data if m is None else data[:m.end()] + m.group() + data[m.end():]
    if kind == "bodylen":
        m = re.search(rb"bytes=([0-9]+)", data)
        if m is None:
            return data
        new = a[0]
        if new[0] in "+-" and new[1:].isascii() and new[1:].isdecimal():
            new = str(max(0, int(m.group(1)) + int(new)))
        return data[:m.start(1)] + new.encode() + data[m.end(1):]
    pattern = rb"[0-9]+" if kind == "number" else rb"(?<==)[^ \n]*"
    m = _nth(pattern, data, a[0])
    return data if m is None else data[:m.start()] + a[1].encode() + data[m.end():]


# Never send a header whose verb stops the hub or a worker on purpose.
STOPPERS = re.compile(rb"(?:\A|\n)[ \t\r\x0b\x0c]*(?:shutdown|drain)(?:[ \t\r\n\x0b\x0c]|\Z)",
                      re.IGNORECASE)


class Fuzz:
    """The mutator's hub: one for the module, restarted only if it died
    (so a failing batch can be replayed against a live hub)."""

    def __init__(self, tmp):
        self.grid = Grid(tmp)
        self.tags = itertools.count(1)
        self.batches = 0
        self.deaths = []
        self.baseline = None

    def start(self):
        self.grid.close()
        self.grid.port = 0
        start_grid(self.grid)
        self.baseline = rss_mb(self.grid.hub.pid)

    def ensure(self):
        if self.grid.hub.poll() is not None:
            self.deaths.append(log_tail(self.grid))
            self.start()

    def send(self, example):
        """One example on fresh connections, closed after reading what
        the hub says before it closes (or a short while)."""
        mode, msg, ops = example
        g = self.grid
        peers = []
        replies = []
        hid = "1"
        try:
            if mode == "paired":
                w, c, hid = fake_worker_with_job(g, f"fz{next(self.tags)}")
                peers = [w, c]
            else:
                p = Peer(g)
                peers = [p]
                if mode != "bare":
                    p.welcome(mode.split("+")[0])
                if mode == "client+run":
                    p.send(wire.format("RUN", "1", stdin=1, body=b"cat"))
                elif mode == "worker+ready":
                    p.send(wire.format("READY", slots=1, name="fuzz"))
            data = render(msg, hid)
            for op in ops:
                data = mutate(data, op)
            if STOPPERS.search(data):
                return
            try:
                peers[0].send(data)
            except OSError:
                pass            # the hub closed on an earlier fatal error
            replies = [m for p in peers for m in p.drain()]
        finally:
            for p in peers:
                p.close()
        # ERR 70: an exception got out of a handler.  The hub survives it,
        # but some field went unchecked.
        bugs = [m for m in replies if m.verb == "ERR" and m.arg(0) == "70"]
        assert not bugs, f"the hub had an internal error: {bugs[0]}"

    def run(self, batch):
        """Send each example; fail naming the one after which the hub
        died or stopped answering."""
        for i, example in enumerate(batch):
            try:
                self.send(example)
                assert self.grid.hub.poll() is None, "the hub died"
            except (AssertionError, OSError) as e:
                raise AssertionError(self.report(
                    f"example {i} of the batch, {example!r} (or the one before): {e}"))
        self.check(batch)

    def report(self, what):
        return f"{what}\n{hub_state(self.grid)}"

    def check(self, batch):
        g = self.grid
        self.batches += 1
        where = "after the batch:\n" + "\n".join(repr(x)[:300] for x in batch)
        assert g.hub.poll() is None, self.report(f"the hub died {where}")
        status(g)
        with open(g.hub.logpath, "rb") as f:
            assert b"internal error" not in f.read(), self.report(f"an internal error {where}")
        grown = rss_mb(g.hub.pid) - self.baseline
        assert grown <= RSS_SLACK_MB, f"hub grew by {grown} MB {where}"
        if self.batches % GRIDMAP_EVERY == 0:
            self.serves()

    def serves(self):
        g = self.grid
        # The raw workers are gone: no job of gridmap's may land on them.
        g.wait_for(lambda ws: [w["name"] for w in ws] == ["real"], "workers")
        gridmap_works(g)


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    f = Fuzz(tmp_path_factory.mktemp("fuzz"))
    try:
        f.start()
        yield f
    finally:
        f.grid.close()


def test_mutated_messages_never_hurt_the_hub(fuzz):
    # No shrinking: each step would replay batches at a hub that may need
    # restarting first.  A failure names its example and quotes the log.
    @settings(max_examples=BATCHES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.lists(EXAMPLE, min_size=BATCH, max_size=BATCH))
    def batch_of_messages(batch):
        fuzz.ensure()
        fuzz.run(batch)

    batch_of_messages()
    assert not fuzz.deaths, "the hub died:\n" + "\n---\n".join(fuzz.deaths)
    fuzz.serves()
    assert_alive(fuzz.grid)


# -- a client that never reads ---------------------------------------------------

def stalled_client(g, jobs):
    """A client with a tiny receive window that starts jobs with large
    output and then never reads again."""
    p = Peer(g, rcvbuf=4096)
    p.welcome("client")
    for i in range(1, jobs + 1):
        p.send(wire.format("RUN", str(i), body=BIG_OUTPUT))
    return p


def test_a_client_that_never_reads_does_not_stall_the_hub(tmp_path):
    g = Grid(tmp_path)
    try:
        start_grid(g, slots=4)
        base = rss_mb(g.hub.pid)
        p = stalled_client(g, 2)
        g.wait_for(lambda s: s["running"] == 2, "status", timeout=30)
        time.sleep(1.0)         # let every buffer between the jobs and it fill
        status(g)
        gridmap_works(g)
        assert_alive(g)
        assert rss_mb(g.hub.pid) - base <= RSS_SLACK_MB
        p.close()
    finally:
        g.close()


def hub_has_stall_timeout():
    r = subprocess.run([*tool("gridd"), "hub", "--help"], capture_output=True,
                       env=clean_env(), timeout=30)
    return b"--stall-timeout" in r.stdout


def test_a_stalled_client_loses_its_slots_after_the_stall_timeout(tmp_path):
    if not hub_has_stall_timeout():
        pytest.skip("gridd hub has no --stall-timeout yet")
    g = Grid(tmp_path)
    try:
        start_grid(g, "--stall-timeout", "2", slots=2)
        p = stalled_client(g, 2)
        g.wait_for(lambda s: s["running"] == 2, "status", timeout=30)
        # Both slots are the stalled client's, until the hub takes them back.
        g.wait_for(lambda s: s["running"] == 0, "status", timeout=60)
        assert [w["running"] for w in g.ctl("workers")] == [0]
        gridmap_works(g)
        assert_alive(g)
        p.close()
    finally:
        g.close()


# -- a full disk under the journal -------------------------------------------------

@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MiB tmpfs, unmounted at the end; skips unless it can be had."""
    if os.geteuid() != 0:
        pytest.skip("the disk-full test mounts a tmpfs: it needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                       capture_output=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode(errors='replace').strip()}")
    try:
        yield str(mnt)
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True, timeout=30).returncode:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def fill(directory):
    """Write zeros into directory/fill until the disk has no byte left."""
    path = os.path.join(directory, "fill")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1):
            while True:
                try:
                    if os.write(fd, b"\0" * size) < size:
                        break
                except OSError as e:
                    if e.errno != 28:       # ENOSPC
                        raise
                    break
    finally:
        os.close(fd)
    st_ = os.statvfs(directory)
    assert st_.f_bavail == 0, "the disk is not full"
    return path


def submit_or_refuse(g, n):
    """gridsub one durable job; its id, or None after a clean refusal
    (exit 75, one line on stderr).  Anything else fails the test.  The job
    notes in ran.txt that it ran."""
    command = f"echo {n} >> {g.tmp}/ran.txt; echo dur-{n}"
    try:
        r = g.run("gridsub", "--require", "kind=durable", command, timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"gridsub hung: the hub neither stored nor refused job {n}\n"
                             f"{hub_state(g)}")
    err = r.stderr.decode(errors="replace")
    if r.returncode == 75:
        assert r.stdout == b"" and len(err.splitlines()) == 1, err
        return None
    assert r.returncode == 0, f"gridsub exited {r.returncode}: {err}\n{hub_state(g)}"
    ids = r.stdout.decode().split()
    assert len(ids) == 1 and ids[0].isascii() and ids[0].isdecimal(), r.stdout
    return ids[0]


def submit_until_stored(g, n, timeout=15):
    """Exit 75 says try again: do, twice a second, until the hub stores
    the job (refusals must not keep the hub from trying its disk again)."""
    deadline = time.monotonic() + timeout
    while True:
        did = submit_or_refuse(g, n)
        if did is not None:
            return did
        assert time.monotonic() < deadline, \
            f"the disk has room again, but the hub still refuses durable jobs\n{hub_state(g)}"
        time.sleep(0.5)


def test_a_full_disk_refuses_durable_jobs_and_serves_the_rest(tmp_path, small_tmpfs):
    """Durable jobs wait (for a worker tagged kind=durable) until the disk
    has room again, so each acknowledged one must then run, once, and each
    refused one never."""
    g = Grid(tmp_path)
    g.state = os.path.join(small_tmpfs, "state")
    try:
        g.start_hub()
        g.start_worker("--tag", "kind=session", slots=2, name="session")
        acked = {0: submit_or_refuse(g, 0)}
        assert acked[0] is not None, "a disk with room refused a job"
        filler = fill(small_tmpfs)
        acked.update((n, submit_or_refuse(g, n)) for n in range(1, 6))
        assert_alive(g)
        status(g)
        gridmap_works(g)
        # A restart on the still-full disk: the hub must come up.
        g.kill_hub(signal.SIGKILL)
        g.start_hub()
        g.wait_for(lambda ws: [w["name"] for w in ws] == ["session"], "workers", timeout=30)
        gridmap_works(g)
        os.unlink(filler)
        acked[6] = submit_until_stored(g, 6)
        g.start_worker("--tag", "kind=durable", slots=2, name="durable")
        stored = sorted(n for n, did in acked.items() if did is not None)
        for n in stored:
            r = g.run("gridsub", "--result", acked[n], timeout=60)
            assert (r.stdout, r.returncode) == (b"dur-%d\n" % n, 0), (n, acked[n], r.stderr)
        g.wait_for(lambda s: (s["durable"], s["running"]) == (0, 0), "status")
        with open(os.path.join(g.tmp, "ran.txt")) as f:
            assert sorted(int(x) for x in f.read().split()) == stored
        assert_alive(g)
    finally:
        g.close()


def test_output_the_disk_could_not_hold_fails_the_job_visibly(tmp_path, small_tmpfs):
    """Never "ok" with output cut short: the result says what happened."""
    g = Grid(tmp_path)
    g.state = os.path.join(small_tmpfs, "state")
    try:
        g.start_hub()
        g.start_worker(slots=1)
        go = os.path.join(g.tmp, "go")
        r = g.run("gridsub", f"while [ ! -e {go} ]; do sleep 0.05; done; "
                  f"head -c 3000000 /dev/zero; exit 0")
        assert r.returncode == 0, r.stderr
        did = r.stdout.decode().strip()
        filler = fill(small_tmpfs)
        open(go, "w").close()
        g.wait_for(lambda s: s["running"] == 0, "status", timeout=30)
        os.unlink(filler)
        r = g.run("gridsub", "--result", did, timeout=60)
        assert r.returncode == 1, r.stderr
        assert b"output not stored" in r.stderr and b"exit 0" in r.stderr, r.stderr
        assert len(r.stdout) < 3000000
        assert_alive(g)
    finally:
        g.close()
