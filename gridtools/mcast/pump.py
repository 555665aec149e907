"""The sender's multicast side: blocks built into datagrams (the stream
digest folded as each is first built), and the UDP pump that sends repairs
and new blocks within a token-bucket rate and the slowest receiver's window,
with optional XOR parity and the automatic rate's backing off."""

import collections
import errno
import hashlib
import struct

from gridtools.mcast import net
from gridtools.mcast import wire

BURST = 32               # datagrams sent back to back before looking around
HOLDOFF = 0.03           # a block repaired this recently is not repaired again
MIN_RATE = 10e6          # bytes/s: the automatic rate never goes below this
AUTO_START = 500e6       # bytes/s: where the automatic rate starts (4 Gbit/s)
AUTO_MAX = 1.25e9        # bytes/s: and the most it tries (10 Gbit/s)


class Blocks:
    """Block seq of the source as a tagged datagram.  The first build of
    each block, in order, folds its tag into the stream digest (and hands
    it to on_first, for parity): the pump and the feeds share one."""

    def __init__(self, source, tagger, session):
        self.source = source
        self.tagger = tagger
        self.session = session
        self.digest = hashlib.sha256()
        self.next = 0                 # the first block not yet folded in
        self.on_first = None

    def build(self, seq, mv, off):
        """Write the datagram for block `seq` into mv at off (off=4 leaves
        room for a frame length); return the view to send."""
        n = self.source.read_into(seq, mv[off + wire.HLEN:])
        wire.HEADER.pack_into(mv, off, wire.MAGIC, wire.VERSION, wire.DATA, self.session, seq)
        end = off + wire.HLEN + n
        tag = self.tagger(mv[off:end])
        mv[end:end + wire.TAGLEN] = tag
        if off:
            wire.FRAMELEN.pack_into(mv, 0, end + wire.TAGLEN - 4)
            start = 0
        else:
            start = off
        if seq == self.next:
            self.digest.update(tag)
            self.next += 1
            if self.on_first is not None:
                self.on_first(mv[off + wire.HLEN:end], tag)
        return mv[start:end + wire.TAGLEN]


class Pump:
    """The multicast socket and what goes out of it.  run() sends what it
    may now and says when it may send again; the sender's loop calls it
    when something changed (an ACK, a NACK, input, a writable socket) or
    when that time comes: nothing here waits or polls."""

    def __init__(self, loop, udp, opts, log, stats, on_writable):
        self.loop = loop
        self.udp = udp
        self.opts = opts
        self.log = log
        self.stats = stats
        self.on_writable = on_writable
        self.rate = opts.rate / 8 if opts.rate else AUTO_START
        self.max_rate = opts.rate / 8 if opts.rate else AUTO_MAX
        self.tokens = 0.0
        self.t_tokens = None
        self.next = 0                 # next new block for the group
        self.sent = {}                # seq -> datagram, for repairs
        self.repairs = collections.deque()
        self.queued = set()           # seqs in self.repairs
        self.last_repair = {}
        self.tick_first_nacks = 0     # blocks reported lost for the first time this tick
        self.tick_sent = 0
        self.loss_history = []
        self.loss_window = []
        self.fec_members = []
        self.fec_acc = 0
        self.send_error = None
        self.seg_size = 65507
        self.gso = not opts.no_gso
        self.gso_cmsg = None
        self.blocked = False          # waiting for the socket to take more
        self.running = False
        self.blocks = None

    def connect(self, group):
        self.udp.connect(group)
        # Datagrams over the path MTU go as GSO segments, not IP fragments.
        self.seg_size = net.path_mtu(self.udp) - 28

    def start(self, blocks, payload, t):
        self.blocks = blocks
        self.payload = payload
        self.buf = bytearray(wire.OVERHEAD + payload)
        self.mv = memoryview(self.buf)
        self.gso_cmsg = [(net.SOL_UDP, net.UDP_SEGMENT, struct.pack("=H", self.seg_size))]
        self.t_tokens = t
        self.running = True
        if self.opts.fec:
            blocks.on_first = self._fec_add

    def close(self):
        if self.blocked:
            self.loop.remove_writer(self.udp.fileno())
        self.udp.close()
        self.udp = None
        self.running = False

    def send(self, data):
        """Send one datagram; False when it did not go (it stays the caller's)."""
        try:
            if len(data) > self.seg_size and self.gso:
                try:
                    self.udp.sendmsg([wire.segment(data, self.seg_size)], self.gso_cmsg or [
                        (net.SOL_UDP, net.UDP_SEGMENT, struct.pack("=H", self.seg_size))])
                except OSError as e:
                    if e.errno not in (errno.EINVAL, errno.ENOPROTOOPT, errno.EIO, errno.EOPNOTSUPP):
                        raise
                    self.log(f"no UDP segmentation offload here ({e.strerror}); sending fragments")
                    self.gso = False
                    self.udp.send(data)
            else:
                self.udp.send(data)
            return True
        except (BlockingIOError, InterruptedError):
            self._wait_writable()
            return False
        except OSError as e:
            # Unreachable now may be reachable in a moment (a link flapping);
            # the block stays queued and a receiver that never hears it is
            # reported by the progress timeout, not by this error.
            if net.would_block(e):
                self._wait_writable()
            elif not self.send_error:
                self.send_error = e.strerror
                self.log(f"sending to the multicast group: {e.strerror}")
            return False

    def _wait_writable(self):
        self.stats["send_waits"] += 1
        if self.running and not self.blocked:
            self.blocked = True
            self.loop.add_writer(self.udp.fileno(), self._writable)

    def _writable(self):
        self.blocked = False
        self.loop.remove_writer(self.udp.fileno())
        self.on_writable()

    def nack(self, seqs, t):
        """Queue repairs: one per block however many receivers ask, and
        none for a block repaired within HOLDOFF."""
        last = self.last_repair
        queued = self.queued
        for seq in seqs:
            if seq >= self.next:
                continue
            when = last.get(seq)
            if when is None:
                self.tick_first_nacks += 1
            elif seq in queued or t - when < HOLDOFF:
                self.stats["suppressed"] += 1
                continue
            last[seq] = t
            queued.add(seq)
            self.repairs.append(seq)

    def run(self, t, limit):
        """Send repairs, then new blocks below `limit` (the window), within
        the rate.  Returns 0 to come straight back, the seconds until the
        token bucket allows the next datagram, or None when only an event
        (an ACK, input, a writable socket) can let more out."""
        if self.blocked:
            return None
        burst_bytes = BURST * (self.payload + wire.OVERHEAD)
        self.tokens = min(self.tokens + (t - self.t_tokens) * self.rate, burst_bytes)
        self.t_tokens = t
        if self.tokens <= 0:
            self.stats["rate_waits"] += 1
            return -self.tokens / self.rate
        sent = 0
        repairs = self.repairs
        src = self.blocks.source
        while repairs and sent < BURST and self.tokens > 0:
            seq = repairs.popleft()
            self.queued.discard(seq)
            d = self.sent.get(seq)
            if d is None:
                if not src.has(seq):
                    continue
                d = bytes(self.blocks.build(seq, memoryview(bytearray(wire.OVERHEAD + self.payload)), 0))
            if not self.send(d):
                repairs.appendleft(seq)
                self.queued.add(seq)
                return None
            self.stats["repairs"] += 1
            self.tokens -= len(d)
            sent += 1
        fec = self.opts.fec
        while sent < BURST and self.tokens > 0 and self.next < limit and src.has(self.next):
            seq = self.next
            d = bytes(self.blocks.build(seq, self.mv, 0))
            self.sent[seq] = d
            self.next += 1
            self.tick_sent += 1
            if not self.send(d):
                # Not sent, but built and folded: it goes out as a repair.
                repairs.appendleft(seq)
                self.queued.add(seq)
                return None
            self.stats["datagrams"] += 1
            self.tokens -= len(d)
            sent += 1
            if fec and ((seq + 1) % fec == 0 or (src.count is not None and seq + 1 == src.count)):
                self._send_parity(seq // fec)
        if sent == 0:
            if self.next >= limit:
                self.stats["window_waits"] += 1
            return None
        if self.tokens <= 0:
            return -self.tokens / self.rate
        return 0

    def _fec_add(self, payload, tag):
        self.fec_members.append((len(payload), tag))
        self.fec_acc = wire.xor_into(self.fec_acc, payload)

    def _send_parity(self, g):
        body = wire.parity_body(self.fec_members, self.fec_acc)
        self.fec_members = []
        self.fec_acc = 0
        d = wire.pack_datagram(self.blocks.tagger, wire.PARITY, self.blocks.session, g, body)
        if self.send(d):
            self.stats["parity"] += 1

    def forget_below(self, low):
        """Every receiver has the blocks below low: no repairs for them."""
        for seq in [s for s in self.sent if s < low]:
            del self.sent[seq]
            self.last_repair.pop(seq, None)

    def adapt(self):
        """Once a tick: the automatic rate follows the loss of new blocks."""
        if not self.opts.rate and self.tick_sent >= 8:
            # The fraction of new blocks first reported lost: a NACK asked
            # again is not counted twice, so a lower rate cannot make the
            # ratio look worse and spiral down.  Steady loss (a lossy link,
            # --simulate-loss) sets the floor; only loss above it is
            # congestion to back off from.
            # Sums over the last second, so a tick that sent little while
            # repairs of earlier blocks were asked for cannot look lossy.
            self.loss_window = (self.loss_window + [(self.tick_first_nacks, self.tick_sent)])[-10:]
            lost = sum(x[0] for x in self.loss_window)
            sent = sum(x[1] for x in self.loss_window)
            ratio = lost / sent
            self.loss_history = (self.loss_history + [ratio])[-50:]
            base = min(self.loss_history)
            if len(self.loss_window) >= 5 and ratio > base + 0.1:
                self.loss_window = []     # judge the new rate on its own losses
                self.rate = max(MIN_RATE, self.rate * 0.8)
            else:
                self.rate = min(self.max_rate, self.rate * 1.1)
        self.tick_first_nacks = 0

    def end_tick(self):
        self.tick_sent = 0
