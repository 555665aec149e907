"""The hot path of the wire parser against the general one: parse_plain
(RUN, DONE, OUT, ACK... of plain tokens) must give what parse_header gives,
or step aside (None) so that parse_header decides; it never takes what the
grammar refuses.  The field accessors' inline checks likewise agree with
wire.uint.  Random headers and mutations of real ones."""

import os
import sys

from hypothesis import example, given, settings, strategies as st

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gridtools.proto import wire  # noqa: E402

HOT = ["RUN", "DONE", "OUT", "ACK", "IN", "KILL", "READY", "PING", "PONG", "PUB", "PUT", "GOT",
       "MSG"]
KEYS = ["bytes", "exit", "sig", "outcome", "fd", "n", "eof", "argv", "stdin", "timeout",
        "worker", "reason", "tag.site", "req.has", "x-y", "a_b", "Exit", "1x", ""]
# Bytes that matter to the grammar, and some that should not be there.
ALPHABET = b"RUNDOEACKINrundoe0123456789 =%.-_:+\t\r\x0b\x0c\x00\x7f\x80\xff\xc2\xb2az"


def general(line):
    try:
        return wire.parse_header(line)
    except wire.WireError:
        return "rejected"


def agree(line):
    fast = wire.parse_plain(line)
    if fast is not None:
        assert fast == general(line), line
    return fast


token = st.one_of(
    st.from_regex(rb"\A[0-9]{1,21}\Z"),
    st.from_regex(rb"\A[!-~]{1,12}\Z"),
    st.builds(lambda k, v: k.encode() + b"=" + v, st.sampled_from(KEYS),
              st.one_of(st.from_regex(rb"\A[0-9]{0,20}\Z"), st.from_regex(rb"\A[!-~]{0,12}\Z"))),
)


@st.composite
def hot_header(draw):
    """A header of a hot verb in the shape peers send, maybe damaged."""
    verb = draw(st.sampled_from(HOT + ["run", "Run", "ERR", "HELLO", "X" * 17]))
    words = [verb.encode()] + draw(st.lists(token, max_size=6))
    return b" ".join(words)


def mutate(line, data):
    """One of the small edits a hostile or broken peer makes."""
    how = data.draw(st.sampled_from(["insert", "delete", "replace", "double", "cr", "pad"]))
    if how == "cr":
        return line + b"\r"
    if how == "pad":
        return data.draw(st.sampled_from([b" ", b"  "])) + line + b" "
    if how == "double":
        words = line.split(b" ")
        return b" ".join(words + words[1:2])
    if not line:
        return line
    i = data.draw(st.integers(0, len(line) - 1))
    c = bytes([data.draw(st.sampled_from(ALPHABET))])
    if how == "insert":
        return line[:i] + c + line[i:]
    if how == "delete":
        return line[:i] + line[i + 1:]
    return line[:i] + c + line[i + 1:]


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=80))
@example(b"")
@example(b"RUN 1 bytes=")
@example(b"RUN 1 bytes=99999999999999")
@example(b"RUN 1 bytes=16777217")
@example(b"RUN 1 bytes=0000000000004")
@example(b"DONE 1 exit=0 exit=1")
@example(b"DONE 1 =0")
@example(b"DONE 1 Exit=0")
@example(b"DONE\t1 exit=0")
@example(b"DONE 1 exit=0\r")
@example(b"DONE 1%41 exit=0")
@example(b"DONE \xc2\xb2 exit=0")
def test_random_bytes(line):
    agree(line)


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(list(ALPHABET)), max_size=60).map(bytes))
def test_random_bytes_of_the_grammars_alphabet(line):
    agree(line)


@settings(max_examples=800, deadline=None)
@given(hot_header(), st.data())
def test_hot_headers_and_their_mutations(line, data):
    agree(line)
    for _ in range(data.draw(st.integers(1, 3))):
        line = mutate(line, data)
        agree(line)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["RUN", "DONE", "OUT", "ACK", "IN"]),
       st.integers(0, wire.MAX_ID), st.dictionaries(
           st.sampled_from(["exit", "sig", "fd", "n", "eof", "outcome", "tag.site"]),
           st.from_regex(r"\A[0-9a-z]{1,10}\Z"), max_size=4),
       st.one_of(st.none(), st.binary(max_size=20)))
def test_what_peers_send_takes_the_fast_path(verb, jid, kv, body):
    data = wire.format(verb, jid, body=body, **kv)
    head = data[:data.index(b"\n")]
    assert agree(head) is not None
    msg, end = wire.split(data)
    assert end == len(data)
    assert msg == wire.Message(verb, [str(jid)], kv, body)


def test_the_rest_goes_to_the_general_parser():
    for line in (b"ERR 65 job=1 no such job", b"HELLO 1 role=client nonce=ab",
                 b"run 1 bytes=4", b"RUN 1%20 bytes=4", b"RUN 1  bytes=4\r"):
        assert wire.parse_plain(line) is None
    msg, _ = wire.split(b"run  1   bytes=4\r\ntrue")
    assert (msg.verb, msg.args, msg.kv, msg.body) == ("RUN", ["1"], {}, b"true")


def outcome(fn):
    try:
        return fn()
    except wire.WireError as e:
        return ("rejected", e.code, e.field)


numberish = st.one_of(st.from_regex(r"\A[0-9]{0,22}\Z"), st.text(max_size=6),
                      st.sampled_from(["²", "１", "0x1", "-1", " 1", "1 ", "+1", "1_0"]))


@settings(max_examples=600, deadline=None)
@given(numberish, st.integers(0, 300), st.integers(0, wire.MAX_ID))
def test_field_checks_agree_with_uint(v, lo, hi):
    msg = wire.Message("DONE", [v], {"exit": v})
    assert outcome(lambda: msg.int("exit", None, lo, hi)) == \
        outcome(lambda: wire.uint(v, "DONE: exit=", lo, hi, field="exit"))
    assert outcome(lambda: msg.id_arg(0, hi)) == \
        outcome(lambda: wire.uint(v, "DONE: job id", 0, hi, field="id"))


@settings(max_examples=400, deadline=None)
@given(st.one_of(numberish, st.from_regex(r"\A[A-Za-z0-9_.:+-]{0,70}\Z")))
def test_job_names_digits_or_the_ref_grammar(v):
    msg = wire.Message("RUN", [v])
    want = v if ((v.isascii() and v.isdigit() and len(v) <= 19)
                 or wire._REF.match(v)) else "rejected"
    got = outcome(lambda: msg.ref_arg(0))
    assert (got if not isinstance(got, tuple) else "rejected") == want
