"""gridmcast: put a verified copy of a file or stream on many hosts at once.

`gridmcast send [FILE|-]` gathers receivers on a TCP control address and
sends; `gridmcast recv HOST:PORT` joins and writes the stream out.
"""

import collections
import json
import os
import signal
import sys
from types import SimpleNamespace

from gridtools.proto import errors, keys, units
from gridtools.cli import common

PROG = "gridmcast"
EPILOG = """\
exit status: 0 every receiver (send) or this receiver (recv) has a verified
copy; 64 usage; 65 recv: the stream digest did not match; 66 send: the input
file cannot be read; 69 send: a receiver failed or none joined, recv: the
sender went away or gave up on it; 70 internal error; 73 recv: the output file
cannot be created; 74 I/O error; 75 recv: the session had started, try again;
76 the peer broke the protocol; 77 the group keys differ; 78 the key file
cannot be read or holds no key; 130/143 interrupted; 141 recv: the reader of
stdout went away.  See gridmcast(1).
"""


_size = units.parse_size
_rate = units.parse_rate


def _typed(conv, what):
    def parse(text):
        try:
            return conv(text)
        except ValueError:
            raise common.argparse.ArgumentTypeError(f"bad {what}: {text!r}") from None
    parse.__name__ = what
    return parse


def build_parser():
    raw = common.argparse.RawDescriptionHelpFormatter
    p = common.ArgumentParser(prog=PROG, description="Reliable one-to-many delivery "
                              "of a file or stream: IP multicast with NACK repair, or a TCP relay chain.",
                              epilog=EPILOG, formatter_class=raw)
    common.add_version(p)
    sub = p.add_subparsers(dest="command", metavar="send|recv")
    sub.required = True

    s = sub.add_parser("send", help="offer a file or stdin to receivers",
                       epilog=EPILOG, formatter_class=raw)
    s.add_argument("file", nargs="?", default="-", metavar="FILE|-")
    s.add_argument("--control", default="0.0.0.0:0", metavar="HOST:PORT",
                   help="TCP address receivers join (default 0.0.0.0:0, printed on stderr)")
    s.add_argument("--group", metavar="ADDR:PORT",
                   help="multicast group (default 239.255.x.y on the control port)")
    s.add_argument("--ttl", type=_typed(int, "ttl"), default=1, help="multicast TTL (default 1)")
    s.add_argument("--interface", metavar="ADDR",
                   help="send multicast out of this IPv4 address (default: the control address)")
    s.add_argument("--tcp", action="store_true", help="use a TCP relay chain, no multicast")
    s.add_argument("--fec", type=_typed(int, "parity group size"), default=0, metavar="K",
                   help="send one XOR parity datagram per K data datagrams")
    s.add_argument("--rate", type=_typed(_rate, "rate"), metavar="BITS",
                   help="fixed multicast rate in bits/s (e.g. 800M); default automatic")
    s.add_argument("--datagram-size", type=_typed(_size, "size"), default=60000, metavar="BYTES",
                   help="payload bytes per datagram (default 60000)")
    s.add_argument("--no-gso", action="store_true",
                   help="send datagrams over the path MTU as IP fragments, not UDP GSO segments")
    s.add_argument("--min-receivers", type=_typed(int, "count"), default=1, metavar="N",
                   help="start once N receivers have joined (default 1)")
    s.add_argument("--wait", type=_typed(float, "seconds"), metavar="SECS",
                   help="start after SECS with whoever joined, even if fewer than N")
    s.add_argument("--key-file", metavar="FILE", help="group key: HMAC every block")
    s.add_argument("--no-evict", dest="evict", action="store_false",
                   help="hold every receiver to the slowest one's pace")
    s.add_argument("--buffer", type=_typed(_size, "size"), default=64 << 20, metavar="BYTES",
                   help="bytes of a stream kept for repairs and catching up (default 64M)")
    s.add_argument("--timeout", type=_typed(float, "seconds"), default=30.0, metavar="SECS",
                   help="give up on a receiver that makes no progress for SECS (default 30)")
    s.add_argument("--name", metavar="NAME",
                   help="announce the control address on a hub under NAME until the start")
    s.add_argument("--hub", metavar="HUB",
                   help=f"the hub for --name (default $GRID_HUB or {common.DEFAULT_HUB})")
    s.add_argument("--json", action="store_true", help="print the outcome as JSON")
    s.add_argument("-q", "--quiet", action="store_true", help="print no per-receiver lines")
    s.add_argument("-v", "--verbose", action="store_true",
                   help="print notices (evictions, fallbacks to TCP) as they happen")

    r = sub.add_parser("recv", help="join a sender and write what it sends",
                       epilog=EPILOG, formatter_class=raw)
    r.add_argument("control", nargs="?", metavar="HOST:PORT",
                   help="the sender's control address (or give --name)")
    r.add_argument("--name", metavar="NAME",
                   help="join the sender announced on a hub as NAME")
    r.add_argument("--hub", metavar="HUB",
                   help=f"the hub for --name (default $GRID_HUB or {common.DEFAULT_HUB})")
    r.add_argument("-o", "--output", default="-", metavar="FILE",
                   help="write here (default stdout); a file appears only once verified")
    r.add_argument("--key-file", metavar="FILE", help="group key shared with the sender")
    r.add_argument("--interface", metavar="ADDR",
                   help="join the group on this IPv4 address (default: the one facing the sender)")
    r.add_argument("--simulate-loss", type=_typed(float, "fraction"), default=0.0, metavar="P",
                   help="drop this fraction of incoming datagrams (tests, demonstrations)")
    r.add_argument("--timeout", type=_typed(float, "seconds"), default=30.0, metavar="SECS",
                   help="give up after SECS without data once started (default 30)")
    r.add_argument("--wait", type=_typed(float, "seconds"), default=0.0, metavar="SECS",
                   help="keep trying for SECS to join a sender not listening yet (default 0)")
    r.add_argument("-v", "--verbose", action="store_true",
                   help="print notices (an eviction, a fallback to TCP) as they happen")
    p.commands = {"send": s, "recv": r}
    return p


def parse_options(argv):
    from gridtools.mcast import wire
    p = build_parser()
    o = p.parse_args(argv)
    try:
        if o.command == "send":
            o.control = wire.parse_hostport(o.control, "--control")
            if o.group:
                o.group = wire.parse_hostport(o.group, "--group")
                from gridtools.mcast import net as mcastnet
                if not mcastnet.is_multicast(o.group[0]):
                    raise errors.UsageError(f"--group {o.group[0]} is not an IPv4 multicast address")
            if not 0 <= o.ttl <= 255:
                raise errors.UsageError(f"--ttl {o.ttl} is outside 0..255")
            if not 0 <= o.fec <= wire.MAX_FEC:
                raise errors.UsageError(f"--fec {o.fec} is outside 0..{wire.MAX_FEC}")
            if not 512 <= o.datagram_size <= 65000:
                raise errors.UsageError(f"--datagram-size {o.datagram_size} is outside 512..65000")
            if o.min_receivers < 1:
                raise errors.UsageError("--min-receivers must be at least 1")
            if o.rate is not None and o.rate <= 0:
                raise errors.UsageError("--rate must be positive")
        else:
            if o.control is None and o.name is None:
                raise errors.UsageError("give the sender's HOST:PORT, or --name NAME")
            if o.control is not None and o.name is not None:
                raise errors.UsageError("give the sender's HOST:PORT or --name NAME, not both")
            if o.control is not None:
                o.control = wire.parse_hostport(o.control, "sender address")
            if not 0.0 <= o.simulate_loss < 1.0:
                raise errors.UsageError(f"--simulate-loss {o.simulate_loss} is outside 0..1")
        if o.name is not None:
            from gridtools.proto import wire
            if not wire.NAME.match(o.name):
                raise errors.UsageError(f"--name {o.name!r}: {wire.NAME_RULE}")
        elif o.hub is not None:
            raise errors.UsageError("--hub is for --name")
    except errors.UsageError as e:
        # As argparse reports its own errors: after the subcommand's usage.
        p.commands[o.command].error(str(e))
    return o


def read_key(path):
    """The group key, read as every command reads a key file."""
    return None if path is None else keys.read_key(path)


class Notices:
    """The log of a run, quiet on success as cron needs.  A notice (an
    eviction, a fallback to TCP, rejected datagrams) is printed as it
    happens only with -v; otherwise it is held, and printed only if the run
    fails, where it helps explain why.  A line logged `always` (the control
    address receivers need) is printed at once."""

    HELD = 200          # the last notices are the ones that explain a failure

    def __init__(self, verbose):
        self.verbose = verbose
        self.held = collections.deque(maxlen=self.HELD)

    def __call__(self, msg, always=False):
        line = f"{PROG}: {msg}"
        if self.verbose or always:
            print(line, file=sys.stderr, flush=True)
        else:
            self.held.append(line)

    def failed(self):
        """The run failed: what it held back may tell why."""
        while self.held:
            print(self.held.popleft(), file=sys.stderr, flush=True)


class Announcement:
    """--name: the control address announced on a hub from the moment the
    sender listens until it starts (receivers that come later wait for the
    next session under that name instead of being refused)."""

    def __init__(self, name, hub, log):
        self.name = name
        self.hub = hub
        self.log = log
        self.client = None

    def on_open(self, control):
        from gridtools.hub import client as hubclient
        self.client = hubclient.announce(self.hub, dict(os.environ), self.name,
                                         control[0], control[1])
        # Like the control address: where receivers find this sender.
        self.log(f"announced as {self.name} on hub {self.hub}", always=True)

    def withdraw(self):
        if self.client is not None:
            self.client.close()
            self.client = None


def progress_line(text):
    """The sender's progress, redrawn in place on a terminal's stderr."""
    sys.stderr.write(f"\r{text}\x1b[K")
    sys.stderr.flush()


def _send(o):
    from gridtools.mcast import send as mcastsend
    from gridtools.mcast import source as mcastsource
    key = read_key(o.key_file)
    source = mcastsource.open_source(o.file, o.datagram_size, o.buffer)
    named = None
    if o.name is not None:
        named = Announcement(o.name, common.hub_address(o.hub, os.environ), o.log)
    opts = SimpleNamespace(control=o.control, group=o.group, ttl=o.ttl, interface=o.interface,
                           tcp=o.tcp, fec=o.fec, rate=o.rate, payload=o.datagram_size,
                           tcp_payload=128 << 10, min_receivers=o.min_receivers, wait=o.wait,
                           key=key, evict=o.evict, timeout=o.timeout, no_gso=o.no_gso,
                           debug=o.debug, on_open=named and named.on_open,
                           on_start=named and named.withdraw,
                           progress=progress_line if sys.stderr.isatty() else None)
    try:
        result = mcastsend.Sender(opts, source, o.log).run()
    finally:
        if opts.progress is not None:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
        if named is not None:
            named.withdraw()
    rows = result["receivers"]
    if o.json:
        print(json.dumps(result, sort_keys=True))
    elif not o.quiet:
        for r in rows:
            extra = f"  {r['reason']}" if r["reason"] else ""
            print(f"{r['receiver']:<22} {r['status']:<9} {r['bytes']:>12} "
                  f"{r['seconds']:>9.3f}s  {r['via']}{extra}")
    bad = [r for r in rows if r["status"] != "verified"]
    if bad or not rows:
        return errors.UNAVAILABLE
    return errors.OK


def _terminated(signum, frame):
    raise errors.GridError("terminated by a signal", errors.TERMINATED)


def _recv(o):
    from gridtools.mcast import recv as mcastrecv
    # A receiver told to stop removes its partial file on the way out.
    signal.signal(signal.SIGTERM, _terminated)
    key = read_key(o.key_file)
    if o.name is not None:
        from gridtools.hub import client as hubclient
        from gridtools.mcast import wire as mcastwire
        hub = common.hub_address(o.hub, os.environ)
        at = hubclient.lookup(hub, dict(os.environ), o.name, o.wait)
        o.control = mcastwire.parse_hostport(at, f"address announced as {o.name}")
    stats = mcastrecv.receive(o.control, output=o.output, key=key, loss=o.simulate_loss,
                              interface=o.interface, timeout=o.timeout, wait=o.wait, log=o.log,
                              debug=o.debug)
    if o.debug:
        o.log(f"receiver counters: {json.dumps(stats, sort_keys=True)}")
    return errors.OK


def _main(argv):
    o = parse_options(argv)
    o.debug = bool(os.environ.get("GRID_DEBUG"))   # the environment, read once
    o.log = Notices(o.verbose or o.debug)
    try:
        code = _send(o) if o.command == "send" else _recv(o)
    except BaseException:
        o.log.failed()
        raise
    if code != errors.OK:
        o.log.failed()
    return code


def main(argv=None) -> int:
    return common.run(PROG, _main, argv)
