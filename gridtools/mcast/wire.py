"""gridmcast's own wire formats: data, parity and probe datagrams, their
segments, TCP frames, and the NACK range lists, as pure functions with no I/O.

The grammar is written out in man/gridtools.7 (MULTICAST WIRE FORMAT); this
module is its only implementation, so sender, receiver and tests agree.
The control lines and their handshake are the hub protocol's
(gridtools.proto.wire): one parser, one MAC scheme.
"""

import functools
import hashlib
import hmac
import re
import struct

from gridtools.proto import address, errors

VERSION = 1
MAGIC = b"GM"

# Datagram kinds.
DATA = 1      # one block of the stream: payload of up to `payload` bytes
PARITY = 2    # XOR of K consecutive data blocks, with their lengths and tags
PROBE = 3     # sent before the start, so receivers can say they hear the group
SEGMENT = 4   # one piece of a datagram larger than the path MTU (see segment())

HEADER = struct.Struct("!2sBBIQ")   # magic, version, kind, session, seq
HLEN = HEADER.size                  # 16
TAGLEN = 32                          # SHA-256 or HMAC-SHA256 trailer
OVERHEAD = HLEN + TAGLEN
FRAMELEN = struct.Struct("!I")       # a TCP frame is a length, then a datagram
PARITY_MEMBER = struct.Struct("!I32s")
SEGHEAD = struct.Struct("!2sBBIQBBHH")   # HEADER, inner kind, 0, index, count
SEGLEN = SEGHEAD.size                    # 22

MAX_PAYLOAD = 1 << 20                # the largest block a receiver accepts
MAX_FEC = 64


def make_tagger(key):
    """Return tag(buffer) -> 32 bytes: SHA-256, or HMAC-SHA256 with a key.

    The tag covers the header and the payload, so a block cannot be moved
    to another sequence number or session without the tag failing.
    """
    if key:
        key = bytes(key)

        def tag(buf):
            return hmac.digest(key, buf, "sha256")
    else:
        def tag(buf):
            return hashlib.sha256(buf).digest()
    return tag


def tag_matches(expected, got):
    # A constant-time compare costs nothing next to the hash itself.
    return hmac.compare_digest(expected, got)


def pack_datagram(tagger, kind, session, seq, body):
    """Build one datagram: header, body, tag."""
    head = HEADER.pack(MAGIC, VERSION, kind, session, seq) + body
    return head + tagger(head)


def parse_datagram(tagger, buf, session=None):
    """Check a datagram and return (kind, session, seq, body view).

    Raises ProtocolError naming what was wrong; the tag is checked last so
    a stranger's datagram costs one hash at most.
    """
    n = len(buf)
    if n < OVERHEAD:
        raise errors.ProtocolError(f"datagram of {count(n, 'byte')} is shorter than a header")
    magic, version, kind, sess, seq = HEADER.unpack_from(buf)
    if magic != MAGIC or version != VERSION:
        raise errors.ProtocolError(
            f"datagram with magic {bytes(magic)!r} version {version} is not gridmcast/{VERSION}")
    if session is not None and sess != session:
        raise errors.ProtocolError(f"datagram for session {sess}, expected {session}")
    mv = memoryview(buf)
    if not tag_matches(tagger(mv[:n - TAGLEN]), mv[n - TAGLEN:n]):
        raise errors.ProtocolError(f"datagram kind {kind} seq {seq} failed its tag check")
    return kind, sess, seq, mv[HLEN:n - TAGLEN]


def datagram_tag(buf):
    """The tag trailer of a datagram already checked."""
    return bytes(buf[len(buf) - TAGLEN:])


def frame(datagram):
    """A datagram as a TCP frame: 4-byte length, then the bytes."""
    return FRAMELEN.pack(len(datagram)) + datagram


def split_frames(buf, limit=MAX_PAYLOAD + 4096):
    """Return (list of frame memoryviews, bytes consumed) from a buffer.

    A partial frame at the end is left for the next read; a length over
    `limit` is a protocol error, never an allocation.
    """
    out = []
    pos = 0
    n = len(buf)
    mv = memoryview(buf)
    while n - pos >= 4:
        (size,) = FRAMELEN.unpack_from(buf, pos)
        if size > limit or size < OVERHEAD:
            raise errors.ProtocolError(f"frame of {size} bytes is outside 48..{limit}")
        if n - pos - 4 < size:
            break
        out.append(mv[pos + 4:pos + 4 + size])
        pos += 4 + size
    return out, pos


# Segments: a datagram over the path MTU is cut into pieces that each fit
# in one packet, so the kernel can send them as one UDP GSO super-packet and
# a receiver with UDP GRO gets them back in one read, with no IP
# fragmentation on the way.  Pieces carry no tag: the reassembled datagram
# is checked as a whole, so a forged piece only costs a repair.

def segment(datagram, seg_size):
    """Cut a datagram into pieces of seg_size bytes (the last may be
    shorter), concatenated as one buffer for a GSO send."""
    per = seg_size - SEGLEN
    n = len(datagram)
    count = -(-n // per)
    _, _, kind, session, seq = HEADER.unpack_from(datagram)
    out = bytearray(n + count * SEGLEN)
    src = memoryview(datagram)
    pos = 0
    for i in range(count):
        SEGHEAD.pack_into(out, pos, MAGIC, VERSION, SEGMENT, session, seq, kind, 0, i, count)
        chunk = src[i * per:(i + 1) * per]
        out[pos + SEGLEN:pos + SEGLEN + len(chunk)] = chunk
        pos += SEGLEN + len(chunk)
    return out


_SAME = SEGLEN - 4          # the bytes every piece of one datagram shares, before index


@functools.lru_cache(maxsize=4)
def _index_count(count):
    """The (index, count) ends of the headers of pieces 0..count-1."""
    return [struct.pack("!HH", i, count) for i in range(count)]


def join_segments(buf, seg_size):
    """The datagram whose pieces fill buf, cut every seg_size bytes as a GRO
    read returns them; None unless buf holds exactly pieces 0..count-1 of
    one datagram, in order (then each piece goes its own way).  The common
    case, a whole datagram in one read, costs no Python call per piece."""
    n = len(buf)
    count = -(-n // seg_size)
    if count < 2 or n - (count - 1) * seg_size <= SEGLEN:
        return None
    mv = memoryview(buf)
    first = SEGHEAD.unpack_from(mv)
    if first[:3] != (MAGIC, VERSION, SEGMENT) or first[7:] != (0, count):
        return None
    offs = range(0, n, seg_size)
    same = bytes(mv[:_SAME])
    if (b"".join([mv[off:off + SEGLEN] for off in offs])
            != b"".join([same + ends for ends in _index_count(count)])):
        return None
    return b"".join([mv[off + SEGLEN:off + seg_size] for off in offs])


def count(n, noun):
    """`1 byte`, `2 bytes`: a number with its noun agreeing, for messages."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def parse_segment(buf):
    """Return (session, seq, inner kind, index, count, data view) of a piece."""
    if len(buf) < SEGLEN:
        raise errors.ProtocolError(f"segment of {count(len(buf), 'byte')} is shorter than its header")
    magic, version, kind, session, seq, inner, _, index, pieces = SEGHEAD.unpack_from(buf)
    if magic != MAGIC or version != VERSION or kind != SEGMENT:
        raise errors.ProtocolError("not a gridmcast segment")
    if not 0 <= index < pieces or pieces > 1024:
        raise errors.ProtocolError(f"segment {index} of {pieces}")
    return session, seq, inner, index, pieces, memoryview(buf)[SEGLEN:]


# Parity: body = K members (length, tag), then the XOR of their payloads
# zero-padded to the longest.  Little-endian ints make the padding free.

def xor_into(acc, payload):
    return acc ^ int.from_bytes(payload, "little")


def parity_body(members, acc):
    """members: list of (length, tag); acc: XOR accumulator as an int."""
    width = max((m[0] for m in members), default=0)
    head = struct.pack("!H", len(members)) + b"".join(
        PARITY_MEMBER.pack(length, tag) for length, tag in members)
    return head + acc.to_bytes(width, "little")


def parse_parity(body):
    """Return (list of (length, tag), xor bytes) from a parity body."""
    if len(body) < 2:
        raise errors.ProtocolError("parity datagram without a member count")
    (k,) = struct.unpack_from("!H", body)
    if not 1 <= k <= MAX_FEC:
        raise errors.ProtocolError(f"parity datagram for {k} members")
    end = 2 + k * PARITY_MEMBER.size
    if len(body) < end:
        raise errors.ProtocolError("parity datagram shorter than its member list")
    members = [PARITY_MEMBER.unpack_from(body, 2 + i * PARITY_MEMBER.size) for i in range(k)]
    xor = body[end:]
    if any(length > len(xor) for length, _ in members):
        raise errors.ProtocolError("parity datagram shorter than a member")
    return members, xor


def recover(xor, others, length):
    """The missing payload of a parity group, given the other payloads."""
    acc = int.from_bytes(xor, "little")
    for p in others:
        acc ^= int.from_bytes(p, "little")
    try:
        return acc.to_bytes(length, "little")
    except OverflowError:
        raise errors.ProtocolError("parity does not match its group") from None


# NACK ranges: the one argument of a NACK control line, ASCII digits only
# (int() alone would take '+5' and '1_000').

_RANGE = re.compile(r"([0-9]{1,19})(?:-([0-9]{1,19}))?\Z")


def format_ranges(seqs):
    """Sorted ints -> 'a-b,c,d-e' (compact NACK lists)."""
    out = []
    start = prev = None
    for s in seqs:
        if start is None:
            start = prev = s
        elif s == prev + 1:
            prev = s
        else:
            out.append(f"{start}-{prev}" if prev != start else str(start))
            start = prev = s
    if start is not None:
        out.append(f"{start}-{prev}" if prev != start else str(start))
    return ",".join(out)


def parse_ranges(text, limit=1 << 16):
    """'a-b,c' -> list of ints, refusing more than `limit` of them."""
    out = []
    for part in text.split(","):
        m = _RANGE.match(part)
        if m is None:
            raise errors.ProtocolError(f"bad range {part[:40]!r} in NACK")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if hi < lo or hi - lo + len(out) >= limit:
            raise errors.ProtocolError(f"range {part!r} in NACK is out of bounds")
        out.extend(range(lo, hi + 1))
    return out


def parse_hostport(text, what="address"):
    """'HOST:PORT', ':PORT' or '[V6]:PORT' -> (host, port) (UsageError)."""
    try:
        a = address.parse(text, unix=False)
    except address.AddressError as e:
        raise errors.UsageError(f"{what}: {e}") from None
    return a.host, a.port
