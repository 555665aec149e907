"""The gridmcast wire format: every kind round-trips, damage is refused."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridtools.proto import errors
from gridtools.proto import wire as proto
from gridtools.mcast import wire

TAGGERS = [wire.make_tagger(None), wire.make_tagger(b"group key")]


@pytest.mark.parametrize("tagger", TAGGERS)
@given(body=st.binary(max_size=3000), seq=st.integers(0, 2**64 - 1),
       session=st.integers(0, 2**32 - 1), kind=st.sampled_from([wire.DATA, wire.PARITY, wire.PROBE]))
@settings(max_examples=60, deadline=None)
def test_datagram_round_trip(tagger, body, seq, session, kind):
    d = wire.pack_datagram(tagger, kind, session, seq, body)
    k, s, q, b = wire.parse_datagram(tagger, d, session)
    assert (k, s, q, bytes(b)) == (kind, session, seq, body)
    assert wire.datagram_tag(d) == d[-32:]


def test_datagram_damage_refused():
    t = TAGGERS[1]
    d = bytearray(wire.pack_datagram(t, wire.DATA, 7, 3, b"payload"))
    for bad in (bytes(d[:20]), b"XX" + bytes(d[2:]), bytes(d[:-1]) + b"\0"):
        with pytest.raises(errors.ProtocolError):
            wire.parse_datagram(t, bad, 7)
    with pytest.raises(errors.ProtocolError, match="session"):
        wire.parse_datagram(t, bytes(d), 8)
    # The right shape with a plain SHA-256 tag is a stranger without the key.
    forged = wire.pack_datagram(TAGGERS[0], wire.DATA, 7, 3, b"payload")
    with pytest.raises(errors.ProtocolError, match="tag"):
        wire.parse_datagram(t, forged, 7)
    # A block moved to another sequence number fails its tag.
    moved = bytearray(d)
    moved[15] ^= 1
    with pytest.raises(errors.ProtocolError):
        wire.parse_datagram(t, bytes(moved), 7)


@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=20), st.data())
@settings(max_examples=80, deadline=None)
def test_frames_split_anywhere(datagrams, data):
    stream = b"".join(wire.frame(wire.pack_datagram(TAGGERS[0], wire.DATA, 1, i, p))
                      for i, p in enumerate(datagrams))
    cut = data.draw(st.integers(0, len(stream)))
    first, used = wire.split_frames(stream[:cut])
    rest, used2 = wire.split_frames(stream[used:])
    got = [bytes(f) for f in first + rest]
    assert used + used2 == len(stream)
    assert [bytes(wire.parse_datagram(TAGGERS[0], g, 1)[3]) for g in got] == datagrams


def test_oversize_frame_refused():
    with pytest.raises(errors.ProtocolError):
        wire.split_frames(b"\xff\xff\xff\xff" + b"x" * 100)


@given(st.lists(st.binary(min_size=0, max_size=200), min_size=1, max_size=8), st.data())
@settings(max_examples=80, deadline=None)
def test_parity_recovers_any_one(payloads, data):
    acc = 0
    members = []
    for i, p in enumerate(payloads):
        acc = wire.xor_into(acc, p)
        members.append((len(p), bytes(32)))
    body = wire.parity_body(members, acc)
    got_members, xor = wire.parse_parity(body)
    assert [m[0] for m in got_members] == [len(p) for p in payloads]
    lost = data.draw(st.integers(0, len(payloads) - 1))
    others = [p for i, p in enumerate(payloads) if i != lost]
    assert wire.recover(xor, others, len(payloads[lost])) == payloads[lost]


@given(st.sets(st.integers(0, 10**6), max_size=200))
def test_ranges_round_trip(seqs):
    s = sorted(seqs)
    assert wire.parse_ranges(wire.format_ranges(s)) == s if s else True


def test_ranges_bounded():
    with pytest.raises(errors.ProtocolError):
        wire.parse_ranges("0-99999999", limit=4096)
    with pytest.raises(errors.ProtocolError):
        wire.parse_ranges("5-3")
    with pytest.raises(errors.ProtocolError):
        wire.parse_ranges("x")


def lines(*data):
    """What a control connection's reader makes of these bytes."""
    r = proto.Reader()
    for d in data:
        r.feed(d)
    return list(r)


def test_control_lines_are_the_hub_protocols():
    """Formatted and parsed by proto.wire, so the hub's parser reads every
    one: no key announces a body (END and DONE say size=, not bytes=)."""
    said = [proto.format("START", mode="mcast", payload=60000, window=512),
            proto.format("START", mode="tcp", payload=131072, forward="[::1]:7000"),
            proto.format("NACK", wire.format_ranges([1, 2, 3, 7, 9, 10])),
            proto.format("ACK", 64), proto.format("HEARD"), proto.format("EVICT"),
            proto.format("END", count=3, size=150000, digest="ab" * 32),
            proto.format("DONE", size=150000, digest="ab" * 32),
            proto.format("FAILED", reason="digest"), proto.format("PING")]
    got = lines(b"\n" + b"".join(said))    # io.net.connect opens with a blank line
    assert [m.verb for m in got] == [proto.split(d)[0].verb for d in said]
    assert all(m.body is None for m in got)
    assert got[2].args == ["1-3,7,9-10"]
    assert got[6].int("size") == 150000 and got[7].kv == {"size": "150000", "digest": "ab" * 32}
    with pytest.raises(proto.WireError):            # the parser's one header cap
        lines(b"X" * (proto.MAX_HEADER + 1))


def test_the_sender_greets_as_the_hub_does():
    from gridtools.mcast import send as mcastsend
    nonce = proto.new_nonce()
    (msg,) = lines(mcastsend.greeting(nonce, b"k"))
    assert proto.check_hello(msg, roles=("sender",)) == ("sender", nonce)
    assert msg.get("auth") == proto.AUTH
    (msg,) = lines(mcastsend.greeting(nonce, None))
    assert msg.get("auth") == "none"


def test_the_receivers_handshake_is_connect_as():
    """The receiver's side is proto.wire.connect_as, role receiver; the
    MACs are the hub's, so each side's role and the other's nonce count."""
    from gridtools.mcast import send as mcastsend
    key = b"group key"
    theirs = proto.new_nonce()
    (greeting,) = lines(mcastsend.greeting(theirs, key))
    line, check = proto.connect_as(greeting, "receiver", key, peer_roles=("sender",),
                                   hint="--key-file", relay="127.0.0.1:5", rcvbuf=1)
    (hello,) = lines(line)
    role, mine = proto.check_hello(hello, roles=("receiver",))
    assert proto.check_mac(key, role, theirs, mine, hello.get("mac"))
    assert hello.get("relay") == "127.0.0.1:5"
    welcome = proto.format("WELCOME", proto.VERSION, role="sender",
                           mac=proto.mac(key, "sender", mine, theirs), session=1)
    assert check(lines(welcome)[0]).int("session") == 1
    for bad in (proto.mac(key, "receiver", mine, theirs), proto.mac(b"other", "sender", mine, theirs),
                None):
        with pytest.raises(proto.WireError, match="the sender did not prove") as e:
            check(lines(proto.format("WELCOME", proto.VERSION, role="sender", mac=bad))[0])
        assert e.value.code == errors.NOPERM
    with pytest.raises(proto.WireError, match=r"requires a receiver key \(--key-file\)"):
        proto.connect_as(greeting, "receiver", None, peer_roles=("sender",), hint="--key-file")
    (open_greeting,) = lines(mcastsend.greeting(theirs, None))
    with pytest.raises(proto.WireError, match="has no receiver key") as e:
        proto.connect_as(open_greeting, "receiver", key, peer_roles=("sender",))
    assert e.value.code == errors.NOPERM
    with pytest.raises(proto.WireError, match="role must be one of sender"):
        proto.connect_as(lines(proto.hello("hub", theirs))[0], "receiver", None,
                         peer_roles=("sender",))
    refused = lines(proto.error(errors.TEMPFAIL, "the session has already started"))[0]
    with pytest.raises(proto.WireError, match="refused: the session") as e:
        proto.connect_as(refused, "receiver", None, peer_roles=("sender",))
    assert e.value.code == errors.TEMPFAIL


def test_hostport():
    assert wire.parse_hostport("127.0.0.1:80") == ("127.0.0.1", 80)
    assert wire.parse_hostport("[::1]:80") == ("::1", 80)
    assert wire.parse_hostport(":80") == ("127.0.0.1", 80)     # loopback, as everywhere
    for bad in ("nope", "h:x", "h:70000", "[::1]x:5"):
        with pytest.raises(errors.UsageError):
            wire.parse_hostport(bad)


@given(body=st.binary(min_size=1, max_size=20000), seg=st.integers(wire.SEGLEN + 1, 3000),
       seq=st.integers(0, 2**64 - 1))
@settings(max_examples=80, deadline=None)
def test_segments_join_back_whole(body, seg, seq):
    """A GRO read of every piece of one datagram gives the datagram back;
    anything else (a piece lost, moved, or from another datagram) gives None
    and the pieces are taken one by one."""
    d = wire.pack_datagram(TAGGERS[0], wire.DATA, 7, seq, body)
    pieces = bytes(wire.segment(d, seg))
    count = -(-len(pieces) // seg)
    if count < 2 or len(pieces) - (count - 1) * seg <= wire.SEGLEN:
        assert wire.join_segments(pieces, seg) is None
        return
    assert wire.join_segments(pieces, seg) == d
    cut = [pieces[i:i + seg] for i in range(0, len(pieces), seg)]
    assert wire.join_segments(b"".join(cut[:1] + cut[2:]), seg) is None
    assert wire.join_segments(b"".join(cut[1:2] + cut[:1] + cut[2:]), seg) is None
    other = bytes(wire.segment(wire.pack_datagram(TAGGERS[0], wire.DATA, 7, seq ^ 1, body), seg))
    assert wire.join_segments(other[:seg] + b"".join(cut[1:]), seg) is None
    for i, piece in enumerate(cut):
        assert wire.parse_segment(piece)[3:5] == (i, count)


def test_a_segment_shorter_than_its_header_is_a_protocol_error():
    with pytest.raises(errors.ProtocolError, match="3 bytes is shorter"):
        wire.parse_segment(b"abc")


def test_a_receiver_keeps_no_block_past_the_senders_window(tmp_path):
    """Out-of-order blocks wait for their gap only within the window the
    sender announced: a stranger on an unkeyed group cannot fill memory."""
    from gridtools.mcast import recv as mcastrecv
    r = mcastrecv.Receiver(("127.0.0.1", 1), output=str(tmp_path / "out"))
    r.session = 1
    for seq in range(1, 100000, 7):
        r._block(seq, b"x" * 1000, b"")
    kept = len(r.pending)
    assert kept <= mcastrecv.PENDING_BEFORE_START + mcastrecv.WINDOW_SLACK
    assert r.stats["beyond_window"] > 0
    r.window = 32                       # as START window=32 says
    r.pending.clear()
    for seq in range(1, 1000):
        r._block(seq, b"x" * 1000, b"")
    assert max(r.pending) < 32 + mcastrecv.WINDOW_SLACK


def test_control_numbers_are_ascii_digits(tmp_path):
    """A number on a control line is ASCII digits within its maximum, by the
    hub protocol's one field grammar; anything else from the sender is a
    protocol error (76), and an ERR from it ends the receiver with its code."""
    from gridtools.mcast import recv as mcastrecv
    r = mcastrecv.Receiver(("127.0.0.1", 1), output=str(tmp_path / "out"))
    for bad in ("+5", "-1", "1_000", " 5", "", "\u00b2", "99999999999999999999"):
        msg = proto.Message("END", kv={"count": bad, "size": "5", "digest": "ab"})
        with pytest.raises(errors.ProtocolError, match="count="):
            r._control(msg)
    with pytest.raises(errors.ProtocolError, match="END without"):
        r._control(proto.Message("END", kv={"count": "1", "bytes": "5", "digest": "ab"}))
    with pytest.raises(errors.ProtocolError, match="unexpected HELLO"):
        r._control(proto.Message("HELLO", ["1"]))
    with pytest.raises(errors.AuthError, match="the sender: nope") as e:
        r._control(lines(proto.error(errors.NOPERM, "nope"))[0])
    assert e.value.code == errors.NOPERM
    r.sink.discard()
    for bad in ("+5", "1_000", "\u00b2", "5-", "-5", "1,,2"):
        with pytest.raises(errors.ProtocolError):
            wire.parse_ranges(bad)
