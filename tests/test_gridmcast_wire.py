"""The gridmcast wire format: every kind round-trips, damage is refused."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridtools.proto import errors
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


def test_lines_round_trip_and_limits():
    line = wire.format_line("HELLO", 1, nonce="ab", relay="10.0.0.1:5", mac=None)
    assert line == b"HELLO 1 nonce=ab relay=10.0.0.1:5\n"
    assert wire.parse_line(line) == ("HELLO", ["1"], {"nonce": "ab", "relay": "10.0.0.1:5"})
    with pytest.raises(ValueError):
        wire.format_line("BAD", "two words")
    with pytest.raises(errors.ProtocolError):
        wire.parse_line(b"X" * (wire.MAX_LINE + 1))
    with pytest.raises(errors.ProtocolError):
        wire.parse_line(b"\xff\n")
    with pytest.raises(errors.ProtocolError):
        wire.parse_line(b"   \n")


def test_hostport():
    assert wire.parse_hostport("127.0.0.1:80") == ("127.0.0.1", 80)
    assert wire.parse_hostport("[::1]:80") == ("::1", 80)
    assert wire.parse_hostport(":80") == ("127.0.0.1", 80)     # loopback, as everywhere
    for bad in ("nope", "h:x", "h:70000", "[::1]x:5"):
        with pytest.raises(errors.UsageError):
            wire.parse_hostport(bad)


def test_mac_depends_on_role():
    k = b"key"
    assert wire.mac(k, "client", "a", "b") != wire.mac(k, "server", "a", "b")
    assert wire.mac(k, "client", "a", "b") != wire.mac(k, "client", "b", "a")


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


def test_control_numbers_are_ascii_digits():
    assert wire.number("17", "x") == 17
    for bad in ("+5", "-1", "1_000", " 5", "", "²", "99999999999999999999"):
        with pytest.raises(errors.ProtocolError):
            wire.number(bad, "x")
