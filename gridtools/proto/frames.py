"""Message lists: the body of a PUB, PUT or MSG that carries several
messages of a stream.  Each message is its length in ASCII digits, a
colon, its bytes and a newline ("5:hello\\n"), so any bytes pass and a
person can still type one into nc.  Pure functions, used by the hub's
streams service and by the client library alike (gridtools(7), STREAMS)."""

from gridtools.proto import wire

MAX_BATCH = 10000           # messages in one body
MAX_LEN_DIGITS = 8          # a message is at most MAX_BODY bytes: 8 digits
MAX_MESSAGE = wire.MAX_BODY - MAX_LEN_DIGITS - 2   # the most one body carries, framed


def pack(msgs):
    """A list of bytes as one body."""
    return b"".join([b"%d:%s\n" % (len(m), m) for m in msgs])


def chunks(msgs, most=wire.MAX_BODY):
    """msgs in lists of at most MAX_BATCH whose pack() fits in most bytes
    (each message is at most MAX_MESSAGE)."""
    part = []
    size = 0
    for m in msgs:
        framed = len(m) + len(b"%d" % len(m)) + 2
        if part and (size + framed > most or len(part) == MAX_BATCH):
            yield part
            part = []
            size = 0
        part.append(m)
        size += framed
    if part:
        yield part


def unpack(body, n, verb="MSG"):
    """The n messages of body (WireError if it is not exactly n of them,
    in the canonical form pack() writes: no leading zeros, no blanks)."""
    if not 1 <= n <= MAX_BATCH:
        raise wire.WireError(f"{verb}: n= needs 1 to {MAX_BATCH} messages, got {n}",
                             wire.E_USAGE, field="n", got=n)
    out = []
    pos = 0
    end = len(body)
    find = body.find
    for _ in range(n):
        colon = find(b":", pos, pos + MAX_LEN_DIGITS + 1)
        digits = body[pos:colon]
        if colon < 0 or not digits.isdigit() or (digits[0] == 0x30 and len(digits) > 1):
            raise wire.WireError(f"{verb}: message {len(out) + 1} of the body does not start "
                                 f"with LENGTH: (got {bytes(body[pos:pos + 12])!r})",
                                 wire.E_USAGE)
        start = colon + 1
        stop = start + int(digits)
        if stop >= end or body[stop] != 0x0A:
            raise wire.WireError(f"{verb}: message {len(out) + 1} of the body is not "
                                 f"{int(digits)} bytes and a newline", wire.E_USAGE)
        out.append(body[start:stop])
        pos = stop + 1
    if pos != end:
        raise wire.WireError(f"{verb}: {end - pos} bytes after the {n} messages of the body",
                             wire.E_USAGE)
    return out


def split_stream(buf, most):
    """The whole messages at the front of buf, a stream of them in the
    form pack() writes: (list of bytes, the rest, problem).  The rest is
    the start of the next message; problem is None, or why buf cannot go
    on as such a stream (the rest then starts where it went wrong), a
    message saying it has more than most bytes among them."""
    out = []
    pos = 0
    end = len(buf)
    find = buf.find
    while pos < end:
        colon = find(b":", pos, pos + MAX_LEN_DIGITS + 1)
        digits = buf[pos:colon] if colon >= 0 else buf[pos:pos + MAX_LEN_DIGITS + 1]
        canonical = digits.isdigit() and not (len(digits) > 1 and digits[0] == 0x30)
        if colon < 0 and canonical and len(digits) <= MAX_LEN_DIGITS:
            break                   # the length is still coming
        if colon < 0 or not canonical:
            return out, buf[pos:], (f"message {len(out) + 1} does not start with LENGTH: "
                                    f"(got {bytes(buf[pos:pos + 12])!r})")
        n = int(digits)
        if n > most:
            return out, buf[pos:], f"message {len(out) + 1} has {n} bytes, more than {most}"
        stop = colon + 1 + n
        if stop >= end:
            break
        if buf[stop] != 0x0A:
            return out, buf[pos:], f"message {len(out) + 1} is not {n} bytes and a newline"
        out.append(buf[colon + 1:stop])
        pos = stop + 1
    return out, buf[pos:], None
