"""The gridtools wire protocol: parse and format messages, and the HMAC
handshake arithmetic.  Pure functions and one small buffer class; no I/O.

In the worker's MANIFEST, so it imports only the standard library and errors.
The grammar is specified in man/gridtools.7 (section PROTOCOL):

    header  = VERB *( SP token ) LF          at most MAX_HEADER bytes
    token   = arg | key "=" value            %XX escapes in args and values
    body    = exactly N raw bytes when the header carries bytes=N

ERR is the one verb whose tail is free text: `ERR code [key=value...] text`.
"""

import hashlib
import hmac
import re
import secrets

from gridtools.proto import errors

VERSION = "1"
MAX_HEADER = 4096               # bytes, newline included
MAX_BODY = 16 << 20             # bytes in one message body
MAX_ARGS = 64                   # tokens in one header

# The field grammar: every number from a peer is ASCII digits within a
# maximum, every duration finite and bounded (gridtools(7), FIELDS).
MAX_ID = (1 << 63) - 1          # a job id: what the journal's INTEGER holds
MAX_COUNT = (1 << 62)           # byte counts and other tallies
MAX_SECONDS = 10_000_000        # a duration: about 115 days
MAX_REF = 64                    # characters in a client's own job name

# Stable error codes: the sysexits numbers the commands exit with.
E_USAGE, E_DATA, E_UNAVAILABLE, E_SOFTWARE, E_TEMPFAIL, E_PROTOCOL, E_NOPERM = (
    errors.USAGE, errors.DATAERR, errors.UNAVAILABLE, errors.SOFTWARE, errors.TEMPFAIL,
    errors.PROTOCOL, errors.NOPERM)
MAX_SLOTS = 100000              # slots one worker may offer
MAX_SIGNAL = 64                 # the highest signal number (SIGRTMAX on Linux)
MAX_RETRIES = 1000              # retries one durable job may ask for
# A name: an announced service (ANNOUNCE, LOOKUP), a topic or queue, a
# named subscription.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
NAME_RULE = "1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit"

_VERB = re.compile(rb"[A-Za-z]{1,16}\Z")
_SECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?\Z", re.ASCII)
_REF = re.compile(r"[A-Za-z0-9_.:+-]{1,%d}\Z" % MAX_REF, re.ASCII)
_KEY = re.compile(r"[a-z][a-z0-9_.-]{0,63}\Z")
# Bytes that travel unescaped in args and values: printable ASCII but % and =.
_SAFE = frozenset(range(0x21, 0x7F)) - {ord("%"), ord("=")}
_SAFE_BYTES = bytes(sorted(_SAFE))      # for bytes.translate: deleting them leaves the rest
_HEX = frozenset(b"0123456789abcdefABCDEF")


class WireError(Exception):
    """A message that breaks the grammar.

    code is the protocol error code to reply with; fatal means the stream
    cannot be resynchronised (the connection must close after the reply).
    """

    def __init__(self, text, code=E_PROTOCOL, fatal=False, field=None, got=None):
        super().__init__(text)
        self.code = code
        self.fatal = fatal
        self.field = field          # the offending field's name, for the ERR line
        self.got = got              # and the value received

    def reply(self, **kv):
        """The ERR line that answers this error."""
        if self.field is not None:
            kv.setdefault("field", self.field)
            kv.setdefault("got", None if self.got is None else str(self.got)[:200])
        return error(self.code, str(self), **kv)


class Message:
    """One message: VERB, positional args, key=value pairs, optional body."""

    __slots__ = ("verb", "args", "kv", "body")

    def __init__(self, verb, args=(), kv=None, body=None):
        self.verb = verb
        self.args = list(args)
        self.kv = dict(kv or {})
        self.body = body

    def __eq__(self, other):
        return (isinstance(other, Message) and self.verb == other.verb
                and self.args == other.args and self.kv == other.kv
                and self.body == other.body)

    def __repr__(self):
        return f"Message({self.verb!r}, {self.args!r}, {self.kv!r}, {self.body!r})"

    def get(self, key, default=None):
        return self.kv.get(key, default)

    def int(self, key, default=None, lo=0, hi=MAX_COUNT):
        """kv[key] as an int in [lo, hi]; default when absent."""
        v = self.kv.get(key)
        if v is None:
            return default
        # is_uint() inline, and the error's words only on an error: this
        # runs for every DONE and OUT.
        if isinstance(v, str) and v.isascii() and v.isdigit() and len(v) <= 19:
            n = int(v)
            if lo <= n <= hi:
                return n
        return uint(v, f"{self.verb}: {key}=", lo, hi, field=key)

    def seconds(self, key, default=None):
        """kv[key] as a positive, finite, bounded duration; default when absent."""
        v = self.kv.get(key)
        if v is None:
            return default
        return seconds(v, f"{self.verb}: {key}=", field=key)

    def arg(self, i):
        if i >= len(self.args):
            raise WireError(f"{self.verb}: missing argument {i + 1}", E_USAGE)
        return self.args[i]

    def id_arg(self, i, hi=MAX_ID):
        """Positional argument i as a job id (ASCII digits, at most hi)."""
        v = self.args[i] if i < len(self.args) else self.arg(i)
        if isinstance(v, str) and v.isascii() and v.isdigit() and len(v) <= 19:
            n = int(v)
            if n <= hi:
                return n
        return uint(v, f"{self.verb}: job id", 0, hi, field="id")

    def ref_arg(self, i):
        """Positional argument i as a client's name for a job."""
        v = self.args[i] if i < len(self.args) else self.arg(i)
        if not _REF.match(v):       # digits too (1 to 19 of them: what gridmap sends)
            raise WireError(f"{self.verb}: a job name is 1 to {MAX_REF} of A-Z a-z 0-9 _ . : + -,"
                            f" got {v[:80]!r}", E_USAGE, field="id", got=v)
        return v


def is_uint(text):
    """True when text is a number by the field grammar: 1 to 19 ASCII
    digits (isascii() first: isdigit() alone takes '²')."""
    return isinstance(text, str) and text.isascii() and text.isdigit() and len(text) <= 19


def err_code(msg):
    """The code of an ERR message (parse_header made sure it is digits)."""
    return int(msg.args[0]) if msg.args and is_uint(msg.args[0]) else E_PROTOCOL


def uint(text, what, lo=0, hi=MAX_COUNT, field=None):
    """text as an int in [lo, hi]: ASCII digits only (str.isdigit() takes
    '²', which int() refuses).  Raises WireError naming the field."""
    if not is_uint(text) or not lo <= int(text) <= hi:
        raise WireError(f"{what} needs a number from {lo} to {hi}, got {str(text)[:80]!r}",
                        E_USAGE, field=field, got=text)
    return int(text)


def seconds(text, what, field=None):
    """text as a duration in seconds: ASCII digits with an optional
    fraction, more than 0 and at most MAX_SECONDS (no exponent, inf, nan)."""
    if isinstance(text, str) and _SECONDS.match(text):
        value = float(text)
        if 0 < value <= MAX_SECONDS:
            return value
    raise WireError(f"{what} needs seconds, more than 0 and at most {MAX_SECONDS}, "
                    f"got {str(text)[:80]!r}", E_USAGE, field=field, got=text)


def escape(text):
    """An arg or value as a token: %XX for anything but printable ASCII."""
    raw = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else bytes(text)
    if raw and not raw.translate(None, _SAFE_BYTES):
        return raw
    return b"".join(bytes((b,)) if b in _SAFE else b"%%%02X" % b for b in raw)


def unescape(token):
    """Undo escape(); a malformed %XX is a WireError."""
    if b"%" not in token:
        return token.decode("utf-8", "surrogateescape")
    out = bytearray()
    i = 0
    n = len(token)
    while i < n:
        c = token[i]
        if c == 0x25:
            h = token[i + 1:i + 3]
            if len(h) != 2 or not _HEX.issuperset(h):
                raise WireError(f"bad %-escape in {token[:64]!r}")
            out.append(int(h, 16))
            i += 3
        else:
            out.append(c)
            i += 1
    return out.decode("utf-8", "surrogateescape")


def format(verb, *args, body=None, **kv):
    """One message as bytes.  kv keys use _ for . (tag_site -> tag.site is
    not done: pass a dict via **{"tag.site": v} for dotted keys).  Values
    that are None are left out; True is 1."""
    parts = [verb.encode("ascii")]
    parts.extend(escape(str(a)) for a in args)
    for k, v in kv.items():
        if v is None or v is False:
            continue
        if v is True:
            v = 1
        parts.append(k.encode("ascii") + b"=" + escape(str(v)))
    if body is not None:
        parts.append(b"bytes=%d" % len(body))
    head = b" ".join(parts) + b"\n"
    if len(head) > MAX_HEADER:
        raise WireError(f"{verb}: header of {len(head)} bytes is over the limit of {MAX_HEADER}",
                        E_USAGE)
    if body is None:
        return head
    if len(body) > MAX_BODY:
        raise WireError(f"{verb}: body of {len(body)} bytes is over the limit of {MAX_BODY}",
                        E_USAGE)
    return head + bytes(body)


# -- the hot messages, formatted without the general path ----------------------
#
# One RUN and one DONE cross the hub per job; these produce exactly what
# format() would (a unit test holds them to it) at a fraction of its cost.

def run_flags(argv, stdin, timeout):
    """The constant part of a job's RUN header, computed once per job."""
    flags = b""
    if argv:
        flags += b" argv=1"
    if stdin:
        flags += b" stdin=1"
    if timeout is not None:
        flags += b" timeout=" + escape(str(timeout))
    return flags


def format_run(jid, flags, command):
    """RUN jid [flags] bytes=N, then the command: format("RUN", jid, ...)."""
    return b"RUN %d%s bytes=%d\n%s" % (jid, flags, len(command), command)


def format_done(jid, exitcode=None, sig=None, outcome=None, worker=None, reason=None):
    """A DONE with the keys in format()'s order; jid and worker are tokens
    (already escaped), so nothing here needs escaping but the outcome words,
    which are safe."""
    head = b"DONE " + jid
    if exitcode is not None:
        head += b" exit=%d" % exitcode
    if sig is not None:
        head += b" sig=%d" % sig
    if outcome is not None:
        head += b" outcome=" + outcome.encode("ascii")
    if worker is not None:
        head += b" worker=" + worker
    if reason is not None:
        head += b" reason=" + reason.encode("ascii")
    return head + b"\n"


def format_stream(verb, name, key, at, n=None, body=None):
    """VERB name KEY=at [n=N] [bytes=B, then the body]: what format() makes
    of format(verb, name, **{key: at}, n=n, body=body) for the streams'
    hot messages (MSG, and the OK to a PUB or PUT).  verb and key are
    bytes; name is a stream name (str), which the name grammar leaves
    nothing to escape."""
    head = b"%s %s %s=%d" % (verb, name.encode("ascii"), key, at)
    if n is not None:
        head += b" n=%d" % n
    if body is None:
        return head + b"\n"
    return head + b" bytes=%d\n" % len(body) + body


def error(code, text, **kv):
    """An ERR line: a stable code and a human sentence (one line)."""
    text = " ".join(str(text).split())[:1024] or "error"
    parts = [b"ERR", b"%d" % code]
    parts.extend(k.encode("ascii") + b"=" + escape(str(v)) for k, v in kv.items()
                 if v is not None)
    parts.append(text.encode("utf-8", "replace"))
    return b" ".join(parts) + b"\n"


def parse_header(line):
    """Parse one header line (without its newline) into
    (verb, args, kv, body_length or None).  Raises WireError."""
    if line.endswith(b"\r"):
        line = line[:-1]
    if len(line) >= MAX_HEADER:
        raise WireError(f"header of {len(line)} bytes is over the limit of {MAX_HEADER}",
                        fatal=True)
    words = line.split()
    if not words:
        raise WireError("empty line: expected a message such as HELLO")
    if not _VERB.match(words[0]):
        raise WireError("not a verb: " + words[0][:32].decode("ascii", "backslashreplace"))
    verb = words[0].decode("ascii").upper()
    if len(words) > MAX_ARGS + 1 and verb != "ERR":
        raise WireError(f"{verb}: more than {MAX_ARGS} arguments")
    args = []
    kv = {}
    rest = words[1:]
    if verb == "ERR":
        # ERR code [key=value ...] free text
        if not rest or not re.fullmatch(rb"[0-9]{1,3}", rest[0]):
            raise WireError("ERR needs a numeric code of 1 to 3 digits")
        args.append(rest[0].decode("ascii"))
        i = 1
        while i < len(rest) and b"=" in rest[i] and _KEY.match(
                rest[i].split(b"=", 1)[0].decode("ascii", "replace")):
            k, v = rest[i].split(b"=", 1)
            kv[k.decode("ascii")] = unescape(v)
            i += 1
        args.append(b" ".join(rest[i:]).decode("utf-8", "replace"))
        return verb, args, kv, None
    for w in rest:
        if b"=" in w:
            k, v = w.split(b"=", 1)
            key = k.decode("ascii", "replace")
            if not _KEY.match(key):
                raise WireError(f"{verb}: bad key {k[:32]!r}")
            if key in kv:
                raise WireError(f"{verb}: {key}= given twice")
            kv[key] = unescape(v)
        else:
            args.append(unescape(w))
    size = None
    if "bytes" in kv:
        v = kv.pop("bytes")
        if not is_uint(v) or len(v) > 12:
            raise WireError(f"{verb}: bytes= needs a byte count, got {v[:32]!r}", fatal=True,
                            field="bytes", got=v[:32])
        size = int(v)
        if size > MAX_BODY:
            raise WireError(f"{verb}: body of {size} bytes is over the limit of {MAX_BODY}",
                            fatal=True)
    return verb, args, kv, size


# -- the hot headers, parsed without the general path ---------------------------
#
# Nearly every header crossing the hub is a RUN, DONE, OUT, ACK or IN (or
# a stream's PUB, PUT, GOT or MSG) of plain tokens: printable ASCII with no %-escape, single spaces.  parse_plain
# returns what parse_header would for those, and None for anything else,
# which then goes to parse_header: that parser alone accepts or rejects, so
# the fast path cannot take what the grammar refuses (tests/test_wire_fast.py
# holds the two together on random and mutated headers).

_PLAIN = _SAFE_BYTES + b" ="            # bytes a plain header is made of
_HOT = frozenset(("RUN", "DONE", "OUT", "ACK", "IN", "KILL", "READY", "PING", "PONG",
                  "PUB", "PUT", "GOT", "MSG"))
_KEYS = frozenset(("bytes", "exit", "sig", "outcome", "fd", "n", "eof", "argv", "stdin",
                   "timeout", "worker", "reason"))     # known good: no _KEY.match


def parse_plain(line):
    """parse_header(line) for a hot verb's plain header; None when the
    general parser must decide (it also rejects what is wrong)."""
    if len(line) >= MAX_HEADER or line.translate(None, _PLAIN):
        return None
    # Printable ASCII now: one decode for the line, and no token needs
    # unescaping (no %), so each is what unescape() would make of it.
    words = line.decode("ascii").split()
    if not words or len(words) > MAX_ARGS + 1 or words[0] not in _HOT:
        return None
    args = []
    kv = {}
    for w in words[1:]:
        if "=" in w:
            k, _, v = w.partition("=")
            if (k not in _KEYS and not _KEY.match(k)) or k in kv:
                return None
            kv[k] = v
        else:
            args.append(w)
    v = kv.pop("bytes", None)
    if v is None:
        return words[0], args, kv, None
    # ASCII already, so isdigit() is 0-9 only.
    if not v.isdigit() or len(v) > 12 or int(v) > MAX_BODY:
        return None
    return words[0], args, kv, int(v)


_new_message = object.__new__       # a Message of the lists the parser made (no copies)


def split(buf, start=0):
    """Parse the message at buf[start:].

    Returns (Message, next offset), or (None, start) when more bytes are
    needed.  Raises WireError; after a non-fatal one the bad header has been
    consumed and parsing may continue at e.next (set on the error).
    """
    nl = buf.find(b"\n", start, start + MAX_HEADER)
    # Blank lines are no messages: a person typing a body into nc ends
    # it with Enter, and that newline must not be an error.
    while nl >= 0 and (nl == start or (nl == start + 1 and buf[start] == 0x0D)):
        start = nl + 1
        nl = buf.find(b"\n", start, start + MAX_HEADER)
    if nl < 0:
        if len(buf) - start >= MAX_HEADER:
            raise WireError(f"no newline within {MAX_HEADER} bytes: header too long",
                            fatal=True)
        return None, start
    line = bytes(buf[start:nl])
    parsed = parse_plain(line)
    if parsed is None:
        try:
            parsed = parse_header(line)
        except WireError as e:
            e.next = nl + 1
            raise
    end = nl + 1
    size = parsed[3]
    if size is None:
        body = None
    elif len(buf) - end < size:
        return None, start
    else:
        body = bytes(buf[end:end + size])
        end += size
    msg = _new_message(Message)
    msg.verb, msg.args, msg.kv, msg.body = parsed[0], parsed[1], parsed[2], body
    return msg, end


class Reader:
    """Bytes in, messages out: an incremental split() over a buffer."""

    def __init__(self):
        self.buf = bytearray()
        self.pos = 0

    def feed(self, data):
        if self.pos:
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += data

    def __iter__(self):
        return self

    def __next__(self):
        msg = self.next()
        if msg is None:
            raise StopIteration
        return msg

    def next(self):
        """The next whole message, or None (no StopIteration to raise and
        catch once per message on a busy connection)."""
        try:
            msg, self.pos = split(self.buf, self.pos)
        except WireError as e:
            if e.fatal:
                self.buf = bytearray()
                self.pos = 0
            else:
                self.pos = e.next
            raise
        return msg

    def pending(self):
        """Bytes of an unfinished message (for the truncated-body report)."""
        return len(self.buf) - self.pos

    def describe_pending(self):
        data = self.buf[self.pos:]
        nl = data.find(b"\n")
        n = len(data)
        if nl < 0:
            return f"{n} byte{'' if n == 1 else 's'} of an unfinished header"
        try:
            verb, _, _, size = parse_header(bytes(data[:nl]))
        except WireError:
            return f"{n} byte{'' if n == 1 else 's'}"
        got = len(data) - nl - 1
        return f"{verb} with {got} of {size} body bytes"


# -- the handshake ------------------------------------------------------------
#
#   acceptor  -> HELLO 1 role=R1 nonce=N1 auth=hmac-sha256|none
#   connector -> HELLO 1 role=R2 nonce=N2 mac=MAC(k, R2, N1, N2)
#   acceptor  -> WELCOME 1 role=R1 mac=MAC(k, R1, N2, N1)     (or ERR 77)
#
# k is the key of the non-hub role (gridmcast: the group key; its sender
# accepts, its receivers connect).  Each side's own role is in what it
# MACs, and each MAC covers the other side's fresh nonce: a recorded
# exchange cannot be replayed or reflected.

ROLES = ("client", "worker", "hub")
AUTH = "hmac-sha256"


def new_nonce():
    return secrets.token_hex(32)


def mac(key, role, their_nonce, my_nonce):
    msg = f"gridtools-auth-{VERSION}|{role}|{their_nonce}|{my_nonce}".encode("ascii")
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def check_mac(key, role, their_nonce, my_nonce, got):
    want = mac(key, role, their_nonce, my_nonce)
    return hmac.compare_digest(want.encode("ascii"), str(got or "").encode("ascii", "replace"))


def hello(role, nonce, auth=None, **kv):
    return format("HELLO", VERSION, role=role, nonce=nonce, auth=auth, **kv)


def _refused(msg):
    return WireError(f"refused: {msg.args[1] if len(msg.args) > 1 else ''}", err_code(msg))


def connect_as(greeting, role, key, peer_roles=("hub",), hint="a key file, or GRID_KEY",
               **extra):
    """The connecting side of the handshake, written once for clients,
    workers and gridmcast receivers: from the acceptor's HELLO (or its
    ERR), our HELLO to send and a check for the WELCOME that answers it.
    peer_roles are the roles the acceptor may have; hint says where a
    missing key comes from.  Raises WireError whose code says why
    (E_NOPERM: keys; E_PROTOCOL: anything else; or the ERR's)."""
    if greeting.verb == "ERR":
        raise _refused(greeting)
    their_role, their_nonce = check_hello(greeting, roles=peer_roles)
    keyed = greeting.get("auth", "none") != "none"
    if keyed and greeting.get("keys") is not None:
        keyed = role in greeting.get("keys").split(",")     # a key for some roles only
    if keyed and key is None:
        raise WireError(f"requires a {role} key ({hint})", E_NOPERM)
    if not keyed and key is not None:
        # It could never prove the key: say so now, not after joining.
        raise WireError(f"has no {role} key, but this side was given one", E_NOPERM)
    nonce = new_nonce()
    line = hello(role, nonce, mac=mac(key, role, their_nonce, nonce) if key is not None
                 else None, **extra)

    def check(welcome):
        if welcome.verb == "ERR":
            raise _refused(welcome)
        if welcome.verb != "WELCOME":
            raise WireError(f"expected WELCOME, got {welcome.verb}")
        if key is not None and not check_mac(key, their_role, nonce, their_nonce,
                                             welcome.get("mac")):
            raise WireError(f"the {their_role} did not prove it knows the key", E_NOPERM)
        return welcome
    return line, check


def check_hello(msg, roles=ROLES):
    """Validate a HELLO; returns (role, nonce).  Raises WireError."""
    if msg.verb != "HELLO":
        raise WireError(f"expected HELLO, got {msg.verb}", E_PROTOCOL)
    if not msg.args or msg.args[0] != VERSION:
        got = msg.args[0] if msg.args else "none"
        raise WireError(f"protocol version {got!r} not supported (this side speaks {VERSION})",
                        E_PROTOCOL)
    role = msg.get("role")
    if role not in roles:
        raise WireError(f"HELLO: role must be one of {', '.join(roles)}, got {role!r}",
                        E_PROTOCOL)
    nonce = msg.get("nonce", "")
    if not re.fullmatch(r"[0-9a-f]{32,128}", nonce):
        raise WireError("HELLO: nonce= must be 32 to 128 hex digits", E_PROTOCOL)
    return role, nonce


def tls_refusal(exc):
    """(exit code, sentence) for an exception from a TLS handshake, or None
    when it is no TLS error.  A plain-text hub answers a ClientHello with
    its HELLO line ("wrong version number"): a protocol mismatch (76).  A
    certificate refused by either side is a permission error (77); with
    TLS 1.3 the client learns that its certificate was refused only at
    its first read, so callers check reads too."""
    import ssl
    if not isinstance(exc, ssl.SSLError):
        return None
    reason = getattr(exc, "reason", None) or ""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return E_NOPERM, f"TLS: the hub's certificate was refused: {exc.verify_message or reason}"
    if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL",
                  "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST"):
        return E_PROTOCOL, "does not speak TLS (unset GRID_TLS_CA, or drop --tls-ca)"
    if "CERTIFICATE" in reason or "HANDSHAKE_FAILURE" in reason:
        return E_NOPERM, (f"TLS handshake refused ({reason}): a client certificate is "
                          f"required or was not accepted")
    return E_PROTOCOL, f"TLS: {reason or exc}"


def parse_pairs(items, option):
    """["site=lab2", ...] given to option -> {"site": "lab2"}: the shape of
    worker tags and of the requirements jobs make of them (UsageError)."""
    pairs = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k or not v or " " in item:
            raise errors.UsageError(f"{option}: expected KEY=VALUE, got {item!r}")
        pairs[k.lower()] = v
    return pairs


def parse_tags(kv, prefix):
    """{"tag.site": "lab"} -> {"site": "lab"} for the given prefix."""
    n = len(prefix)
    return {k[n:]: v for k, v in kv.items() if k.startswith(prefix) and len(k) > n}


# -- files that travel with jobs (gridmap -S --transferfile, --return, --basefile) --
#
#   RUN id ... stage=1            the job waits for its STAGE and files
#   STAGE id [wd=DIR] [wdrm=1] [cleanup=1] files=N bytes=M
#                                 where it runs; M bytes: the paths to return
#                                 (NUL-separated); it starts once N files ended
#   FILE id path=P [mode=OCT] [off=N] [end=1] bytes=K
#                                 a piece of a file: to the worker before the
#                                 job (a --transferfile), back after it (--return)
#   BASE path=P sha256=H size=N [mode=OCT] [cleanup=1] [off=N end=1 bytes=K]
#                                 a --basefile: its pieces from the client to
#                                 the hub; to a worker, first the offer (no
#                                 body), then the pieces if it says
#   WANT path=P sha256=H          (worker) I have no such file: send it
#
# gridtools(7), FILES says the same; every field is checked here.

MAX_PATH = 1024                 # bytes in a path, workdir included
MAX_FILES = 1000                # files sent, and returns asked, per job
MAX_JOB_BYTES = 1 << 30         # bytes of files sent to one job, and returned by it
MAX_BASES = 64                  # basefiles per run
MAX_BASE_BYTES = 256 << 20      # bytes of basefiles a hub holds for one client
FILE_CHUNK = 1 << 20            # a FILE or BASE body at most
_MODE = re.compile(r"[0-7]{1,4}\Z", re.ASCII)
_SHA256 = re.compile(r"[0-9a-f]{64}\Z", re.ASCII)


def file_path(text, what="path"):
    """A path a job's files may take: 1 to MAX_PATH bytes, no NUL, and no
    ".." component (it would leave the workdir).  Absolute paths are taken,
    as GNU parallel takes them.  Raises WireError."""
    raw = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else b""
    if not raw or len(raw) > MAX_PATH or b"\0" in raw:
        raise WireError(f"{what} needs a path of 1 to {MAX_PATH} bytes with no NUL, got "
                        f"{str(text)[:80]!r}", E_USAGE, field="path", got=text)
    if ".." in text.split("/"):
        raise WireError(f"{what} {text[:200]!r} leaves the workdir ('..'): refused", E_USAGE,
                        field="path", got=text)
    return text


def file_mode(msg):
    """mode= as permission bits (octal, at most 0777 kept); 0o644 when absent."""
    v = msg.get("mode")
    if v is None:
        return 0o644
    if not isinstance(v, str) or not _MODE.match(v):
        raise WireError(f"{msg.verb}: mode= needs 1 to 4 octal digits, got {str(v)[:20]!r}",
                        E_USAGE, field="mode", got=v)
    return int(v, 8) & 0o777


def sha256_field(msg):
    v = msg.get("sha256")
    if not isinstance(v, str) or not _SHA256.match(v):
        raise WireError(f"{msg.verb}: sha256= needs 64 lowercase hex digits", E_USAGE,
                        field="sha256", got=v)
    return v


def file_piece(msg):
    """A FILE or BASE piece: (path, mode, offset, end).  The body is at most
    FILE_CHUNK bytes and ends at most MAX_JOB_BYTES into the file."""
    path = file_path(msg.get("path"), f"{msg.verb}: path=")
    off = msg.int("off", 0, 0, MAX_JOB_BYTES)
    body = msg.body
    if body is not None and (len(body) > FILE_CHUNK or off + len(body) > MAX_JOB_BYTES):
        raise WireError(f"{msg.verb}: a piece is at most {FILE_CHUNK} bytes of a file of at most "
                        f"{MAX_JOB_BYTES}", E_USAGE, field="bytes", got=len(body))
    return path, file_mode(msg), off, msg.get("end") == "1"


def decode_paths(body, what):
    """STAGE's body: the paths to return, NUL-separated (at most MAX_FILES)."""
    if not body:
        return []
    paths = decode_argv(body)
    if len(paths) > MAX_FILES:
        raise WireError(f"{what}: more than {MAX_FILES} paths", E_USAGE, field="bytes")
    return [file_path(p, what) for p in paths]


def encode_argv(argv):
    """An argv list as a body: words separated by NUL."""
    return b"\0".join(w.encode("utf-8", "surrogateescape") if isinstance(w, str) else w
                      for w in argv)


def decode_argv(body):
    return [w.decode("utf-8", "surrogateescape") for w in body.split(b"\0")]
