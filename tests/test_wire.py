"""The wire format: every message kind round-trips; the parser is fuzzed and
only ever raises its own WireError; the handshake arithmetic."""

import os
import sys

import pytest
from hypothesis import given, settings, strategies as st

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gridtools.proto import wire  # noqa: E402


def roundtrip(data):
    msg, end = wire.split(data)
    assert end == len(data)
    return msg


# One example of every message kind the protocol has (see gridtools(7)).
KINDS = [
    wire.hello("hub", "ab" * 32, auth="hmac-sha256", keys="client,worker"),
    wire.hello("client", "cd" * 32, mac="00" * 32),
    wire.format("WELCOME", "1", role="hub", mac="ef" * 32, slots=4),
    wire.format("READY", slots=2, name="w1", pid=42, **{"tag.site": "lab2"}),
    wire.format("RUN", "7", body=b"echo hello", stdin=True, timeout=1.5, **{"req.site": "x"}),
    wire.format("RUN", "8", argv=1, body=wire.encode_argv(["printf", "%s\n", "a b"])),
    wire.format("IN", "7", body=b"\x00\x01binary\nlines"),
    wire.format("IN", "7", eof=1, body=b""),
    wire.format("OUT", "7", fd=2, body=b"\xff" * 100),
    wire.format("DONE", "7", exit=0, worker="w1"),
    wire.format("DONE", "7", sig=9, outcome="timeout"),
    wire.format("DONE", "7", outcome="lost"),
    wire.format("KILL", "7", sig=15),
    wire.format("CANCEL", "s12"),
    wire.format("ACK", "7", n=65536),
    wire.format("SUBMIT", body=b"make -j2", retries=2, ref=0),
    wire.format("JOB", 31, ref=0),
    wire.format("RESULT", 31, wait=1),
    wire.format("PENDING", 31, state="running"),
    wire.format("FORGET", 31),
    wire.format("OK", 31),
    wire.format("STATUS"), wire.format("WORKERS"), wire.format("JOBS"),
    wire.format("INFO", "status", body=b'{"workers": 1}'),
    wire.format("DRAIN", "w1"), wire.format("SHUTDOWN"),
    b"PING\n", b"PONG\n", b"QUIT\n", b"BYE\n",
]


@pytest.mark.parametrize("data", KINDS, ids=lambda d: d.split(b" ")[0].strip().decode())
def test_every_kind_round_trips(data):
    msg = roundtrip(data)
    again = wire.format(msg.verb, *msg.args, body=msg.body, **msg.kv)
    assert roundtrip(again) == msg


def test_err_line_keeps_code_keys_and_sentence():
    data = wire.error(65, "no such job 12 (never submitted)", job=12)
    assert data == b"ERR 65 job=12 no such job 12 (never submitted)\n"
    msg = roundtrip(data)
    assert msg.args == ["65", "no such job 12 (never submitted)"]
    assert msg.kv == {"job": "12"}


def test_typed_by_a_person():
    # Lower-case verbs, extra spaces and CRLF line ends, as nc or telnet send.
    msg, _ = wire.split(b"run  1   bytes=4\r\ntrue")
    assert msg == wire.Message("RUN", ["1"], {}, b"true")


def test_values_with_spaces_and_percent_are_escaped():
    data = wire.format("READY", name="a b%c=d", **{"tag.x": "é"})
    assert b" " not in data.split(b"\n")[0].split(b" ", 2)[-1]
    msg = roundtrip(data)
    assert msg.kv == {"name": "a b%c=d", "tag.x": "é"}


def test_body_is_binary_safe():
    body = bytes(range(256)) * 3 + b"\n\nbytes=3\n"
    msg = roundtrip(wire.format("OUT", "1", fd=1, body=body))
    assert msg.body == body


def test_incomplete_message_waits():
    data = wire.format("OUT", "1", body=b"0123456789")
    for cut in range(len(data)):
        msg, end = wire.split(data[:cut])
        assert msg is None and end == 0


def test_reader_splits_a_stream_fed_byte_by_byte():
    stream = b"".join(KINDS)
    r = wire.Reader()
    got = []
    for i in range(len(stream)):
        r.feed(stream[i:i + 1])
        got.extend(r)
    assert [m.verb for m in got] == [roundtrip(k).verb for k in KINDS]


@pytest.mark.parametrize("line, fatal", [
    (b"123 abc\n", False),
    (b"RUN 1 BAD=x\n", False),
    (b"RUN 1 a=%zz\n", False),
    (b"RUN 1 a=1 a=2\n", False),
    (b"ERR notanumber\n", False),
    (b"RUN 1 bytes=-1\n", True),
    (b"RUN 1 bytes=99999999999999\n", True),
    (b"OUT 1 bytes=%d\n" % (wire.MAX_BODY + 1), True),
    (b"X" * (wire.MAX_HEADER + 10), True),
    (b"RUN " + b"a " * (wire.MAX_ARGS + 1) + b"\n", False),
])
def test_bad_headers_raise_wire_error(line, fatal):
    with pytest.raises(wire.WireError) as e:
        wire.split(line)
    assert e.value.fatal == fatal
    assert e.value.code == wire.E_PROTOCOL


def test_blank_lines_are_skipped():
    msg, end = wire.split(b"\n\r\n\nPING\n")
    assert msg.verb == "PING" and end == 9
    msg, end = wire.split(b"\n\n")
    assert msg is None


def test_reader_resyncs_after_a_bad_line():
    r = wire.Reader()
    r.feed(b"!!garbage!!\nPING\n")
    with pytest.raises(wire.WireError):
        next(r)
    assert next(r).verb == "PING"


def test_format_refuses_what_parse_would_refuse():
    with pytest.raises(wire.WireError):
        wire.format("OUT", "1", body=b"x" * (wire.MAX_BODY + 1))
    with pytest.raises(wire.WireError):
        wire.format("RUN", "x" * wire.MAX_HEADER)


def test_message_int_validates():
    msg = roundtrip(b"ACK 1 n=12x\n")
    with pytest.raises(wire.WireError):
        msg.int("n")
    assert roundtrip(b"ACK 1 n=12\n").int("n") == 12


def test_argv_body_round_trips():
    argv = ["printf", "%s\n", "a b", "", "ü"]
    assert wire.decode_argv(wire.encode_argv(argv)) == argv


# -- fuzzing ------------------------------------------------------------------

@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_split_raises_only_wire_error(data):
    pos = 0
    for _ in range(50):
        try:
            msg, pos2 = wire.split(data, pos)
        except wire.WireError as e:
            if e.fatal:
                return
            pos = e.next
            continue
        if msg is None:
            return
        assert pos2 > pos
        pos = pos2


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(KINDS), max_size=5), st.binary(max_size=40),
       st.integers(min_value=0, max_value=400))
def test_fuzz_mutated_messages(kinds, junk, at):
    data = bytearray(b"".join(kinds))
    data[at:at] = junk
    r = wire.Reader()
    r.feed(bytes(data))
    for _ in range(100):
        try:
            next(r)
        except StopIteration:
            break
        except wire.WireError as e:
            if e.fatal:
                break


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.lists(_text.filter(bool), max_size=4),
       st.dictionaries(st.from_regex(r"[a-z][a-z0-9_.]{0,8}", fullmatch=True).filter(
           lambda k: k != "bytes"), _text.filter(bool), max_size=4),
       st.one_of(st.none(), st.binary(max_size=200)))
def test_fuzz_format_parse_round_trip(args, kv, body):
    data = wire.format("RUN", *args, body=body, **kv)
    msg = roundtrip(data)
    assert msg == wire.Message("RUN", args, kv, body)


# -- the handshake --------------------------------------------------------------

def test_mac_binds_role_and_both_nonces():
    k = b"secret"
    a, b = wire.new_nonce(), wire.new_nonce()
    assert a != b
    m = wire.mac(k, "client", a, b)
    assert wire.check_mac(k, "client", a, b, m)
    assert not wire.check_mac(k, "worker", a, b, m)       # swapped role
    assert not wire.check_mac(k, "client", b, a, m)       # reflected
    assert not wire.check_mac(k, "client", wire.new_nonce(), b, m)   # replayed
    assert not wire.check_mac(b"other", "client", a, b, m)
    assert not wire.check_mac(k, "client", a, b, None)


def test_check_hello():
    msg = roundtrip(wire.hello("client", "ab" * 32))
    assert wire.check_hello(msg) == ("client", "ab" * 32)
    for bad in (b"HELLO 2 role=client nonce=" + b"ab" * 32 + b"\n",
                b"HELLO 1 role=root nonce=" + b"ab" * 32 + b"\n",
                b"HELLO 1 role=client nonce=short\n",
                b"PING\n"):
        with pytest.raises(wire.WireError):
            wire.check_hello(roundtrip(bad))


def test_connect_as_one_handshake_for_every_role():
    """connect_as serves any connector and acceptor role (hub clients and
    workers, gridmcast receivers), names the peer by its role, gives the
    caller's hint for a missing key, and takes keys= at its word."""
    def greeting(role, **kv):
        return roundtrip(wire.hello(role, "ab" * 32, **kv))

    k = b"secret"
    line, check = wire.connect_as(greeting("sender", auth=wire.AUTH), "receiver", k,
                                  peer_roles=("sender",), relay="h:1")
    mine = roundtrip(line)
    assert wire.check_hello(mine, roles=("receiver",))[0] == "receiver"
    assert wire.check_mac(k, "receiver", "ab" * 32, mine.get("nonce"), mine.get("mac"))
    with pytest.raises(wire.WireError, match="the sender did not prove") as e:
        check(roundtrip(wire.format("WELCOME", "1", role="sender", mac="00" * 32)))
    assert e.value.code == wire.E_NOPERM
    with pytest.raises(wire.WireError, match="role must be one of hub"):
        wire.connect_as(greeting("sender"), "client", None)
    with pytest.raises(wire.WireError, match=r"requires a client key \(a key file, or GRID_KEY\)"):
        wire.connect_as(greeting("hub", auth=wire.AUTH), "client", None)
    with pytest.raises(wire.WireError, match=r"requires a receiver key \(--key-file\)\Z"):
        wire.connect_as(greeting("sender", auth=wire.AUTH), "receiver", None,
                        peer_roles=("sender",), hint="--key-file")
    # A hub keyed for workers only takes clients without a key, and a
    # client with one is told at once that the hub cannot prove it.
    line, _ = wire.connect_as(greeting("hub", auth=wire.AUTH, keys="worker"), "client", None)
    assert roundtrip(line).get("mac") is None
    for g in (greeting("hub", auth=wire.AUTH, keys="worker"), greeting("hub", auth="none")):
        with pytest.raises(wire.WireError, match="has no client key") as e:
            wire.connect_as(g, "client", k)
        assert e.value.code == wire.E_NOPERM
    with pytest.raises(wire.WireError, match="refused: busy") as e:
        wire.connect_as(roundtrip(wire.error(75, "busy")), "receiver", None)
    assert e.value.code == 75


def test_the_hot_formats_match_the_general_one():
    for argv in (False, True):
        for stdin in (False, True):
            for timeout in (None, 2.5, 10.0):
                want = wire.format("RUN", 17, argv=argv, stdin=stdin, timeout=timeout,
                                   body=b"echo x")
                assert wire.format_run(17, wire.run_flags(argv, stdin, timeout),
                                       b"echo x") == want
    cases = [dict(exit=0), dict(sig=9), dict(exit=3, outcome="failed", worker="w 1"),
             dict(outcome="cancelled", reason="stalled"), dict(outcome="lost", worker="n")]
    for kv in cases:
        want = wire.format("DONE", "a.1", **kv)
        worker = kv.get("worker")
        got = wire.format_done(b"a.1", kv.get("exit"), kv.get("sig"), kv.get("outcome"),
                               None if worker is None else wire.escape(worker),
                               kv.get("reason"))
        assert got == want, (got, want)
    for name in ("news", "a.b-c_9", "_events", "Q" * 64):
        for key in ("off", "id"):
            for n in (None, 1, 10000):
                for body in (None, b"", b"3:abc\n", bytearray(b"x=y z\n")):
                    want = wire.format("MSG", name, **{key: 12345}, n=n, body=body)
                    got = wire.format_stream(b"MSG", name, key.encode(), 12345, n, body)
                    assert got == want, (got, want)

