"""The gridmcast sender: gather receivers on a TCP control address, then put
the stream on the multicast group (paced, windowed on the slowest receiver's
progress, repaired by NACK with suppression, optional XOR parity) and feed TCP
relay chains for the receivers multicast cannot reach or that fell behind."""

import collections
import errno
import hashlib
import secrets
import socket
import struct

from gridtools.proto import errors
from gridtools.mcast import net
from gridtools.mcast import wire

PROBE_EVERY = 0.05       # seconds between probes while receivers gather
PROBE_GRACE = 1.0        # how long a joined receiver has to hear a probe
TICK = 0.1               # rate and eviction decisions
BURST = 32               # datagrams sent back to back before looking around
HOLDOFF = 0.03           # a block repaired this recently is not repaired again
MIN_RATE = 10e6          # bytes/s: the automatic rate never goes below this
AUTO_START = 500e6       # bytes/s: where the automatic rate starts (4 Gbit/s)
AUTO_MAX = 1.25e9        # bytes/s: and the most it tries (10 Gbit/s)
WINDOW_MAX = 16 << 20    # bytes in flight beyond the slowest receiver, at most
EVICT_TICKS = 15         # ticks a receiver may hold the group back by half a window
LOSSY_TICKS = 3          # ticks a receiver may lose far more than the others
FEED_SNDBUF = 2 << 20

TERMINAL = ("verified", "failed", "dead")


class Member:
    """One receiver, as the sender sees it."""

    def __init__(self, conn, number):
        self.conn = conn
        self.name = conn.name
        self.number = number
        self.state = "handshake"
        self.nonce = secrets.token_hex(16)
        self.relay = None
        self.rcvbuf = 0
        self.heard = False
        self.mode = None
        self.ack = 0
        self.t_start = None
        self.t_end = None
        self.bytes = 0
        self.reason = ""
        self.nacks = 0
        self.tick_nacks = 0
        self.lag_ticks = 0
        self.lossy_ticks = 0
        self.last_progress = 0.0
        self.feed = None
        self.downstream = None
        self.evicted = False

    def running(self):
        return self.state == "running"


class Feed:
    """A TCP stream of frames from the sender to one receiver's relay port."""

    def __init__(self, sender, member, pos):
        self.sender = sender
        self.member = member
        self.pos = pos
        host, port = wire.parse_hostport(member.relay, "relay address")
        sock = socket.create_connection((host, port), timeout=sender.opts.timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, FEED_SNDBUF)
        sock.setblocking(False)
        self.sock = sock
        p = sender.payload
        self.buf = bytearray(4 + wire.OVERHEAD + p)
        self.mv = memoryview(self.buf)
        self.cur = None
        self.closed = False
        self.paused = False

    def on_writable(self):
        s = self.sender
        src = s.source
        for _ in range(64):
            if self.cur is None:
                if not src.has(self.pos):
                    if src.count is not None and self.pos >= src.count:
                        self.finish()
                    else:
                        s.loop.watch(self.sock, None)     # wait for input
                        self.paused = True
                    return
                self.cur = s.build(self.pos, self.mv, 4)
            try:
                n = self.sock.send(self.cur)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close()
                return
            if n == len(self.cur):
                self.cur = None
                self.pos += 1
            else:
                self.cur = self.cur[n:]

    def finish(self):
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.close()

    def close(self):
        if not self.closed:
            self.closed = True
            self.sender.loop.forget(self.sock)
            self.sock.close()
            self.sender.feeds.discard(self)


class Sender:
    def __init__(self, opts, source, log):
        self.opts = opts
        self.source = source
        self.log = log
        self.tagger = wire.make_tagger(opts.key)
        self.loop = net.Loop()
        self.session = secrets.randbits(32)
        self.members = []
        self.feeds = set()
        self.state = "gather"
        self.udp = None
        self.payload = opts.payload
        self.digest = hashlib.sha256()
        self.digest_next = 0
        self.next = 0                 # next new block for the group
        self.sent = {}                # seq -> datagram, for repairs
        self.repairs = collections.deque()
        self.queued = set()           # seqs in self.repairs
        self.tick_first_nacks = 0     # blocks reported lost for the first time this tick
        self.last_repair = {}
        self.end_line = None
        self.stats = {"datagrams": 0, "repairs": 0, "suppressed": 0, "nack_requests": 0,
                      "parity": 0, "evictions": 0, "window_waits": 0, "rate_waits": 0,
                      "send_waits": 0, "idle_seconds": 0.0}
        self.rate = opts.rate / 8 if opts.rate else AUTO_START
        self.max_rate = opts.rate / 8 if opts.rate else AUTO_MAX
        self.tokens = 0.0
        self.t_tokens = net.now()
        self.loss_history = []
        self.loss_window = []
        self.tick_sent = 0
        self.fec_members = []
        self.fec_acc = 0
        self.send_error = None
        self.seg_size = 65507
        self.gso = not opts.no_gso
        self.udp_blocked = False

    # --- gathering -------------------------------------------------------------

    def open(self):
        o = self.opts
        self.listener = net.listen_tcp(o.control[0], o.control[1])
        self.control_addr = self.listener.getsockname()
        host = self.control_addr[0]
        if not o.tcp:
            if o.group:
                self.group = o.group
            else:
                # A group of our own, on the control port, so sessions on one
                # host do not hear each other.
                r = secrets.token_bytes(2)
                self.group = (f"239.255.{r[0]}.{r[1]}", self.control_addr[1])
            iface = o.interface
            if iface is None and host not in ("0.0.0.0", "::"):
                iface = host
            self.iface = iface
            try:
                self.udp = net.udp_sender(self.group, o.ttl, iface)
                self.udp.connect(self.group)
                # Datagrams over the path MTU go as GSO segments, not IP fragments.
                self.seg_size = net.path_mtu(self.udp) - 28
            except OSError as e:
                self.log(f"no multicast from {iface or 'the default interface'}: {e.strerror}; using TCP")
                self.udp = None
        self.loop.watch(self.listener, self._on_accept)
        group = f" group {self.group[0]}:{self.group[1]}" if self.udp else " tcp chain"
        self.log(f"control {net.fmt_addr(self.control_addr)}{group}", always=True)
        if o.on_open:
            o.on_open(self.control_addr)

    def _on_accept(self):
        try:
            sock, addr = self.listener.accept()
        except OSError:
            return
        conn = net.Conn(sock, net.fmt_addr(addr))
        m = Member(conn, len(self.members))
        auth = "hmac" if self.opts.key else "none"
        conn.send(wire.format_line("GRIDMCAST", wire.VERSION, nonce=m.nonce, auth=auth))
        self.members.append(m)
        self.loop.watch(sock, lambda m=m: self._on_member(m))

    def _on_member(self, m):
        m.conn.recv()
        try:
            for line in m.conn.lines():
                verb, args, kv = wire.parse_line(line)
                handler = self.CONTROL.get(verb)
                if handler is None:
                    raise errors.ProtocolError(f"unexpected line {line[:80]!r}")
                handler(self, m, args, kv)
        except errors.GridError as e:
            self._lose(m, "failed", str(e))
            return
        if m.conn.eof:
            self._lose(m, "dead", f"connection lost after {m.ack * self.payload} bytes"
                       if m.state == "running" else "connection lost")

    def _c_hello(self, m, args, kv):
        if m.state != "handshake":
            raise errors.ProtocolError("HELLO twice")
        if self.state != "gather":
            m.conn.send(wire.format_line("REFUSED", "session", "already", "started",
                                         code=errors.TEMPFAIL))
            self._lose(m, "refused", "joined after the start")
            return
        key = self.opts.key
        if key:
            want = wire.mac(key, "client", kv.get("nonce", ""), m.nonce)
            if not wire.tag_matches(want.encode(), kv.get("mac", "").encode()):
                m.conn.send(wire.format_line("REFUSED", "bad", "group", "key", code=errors.NOPERM))
                self._lose(m, "refused", "wrong group key")
                return
        m.relay = kv.get("relay")
        m.rcvbuf = wire.number(kv.get("rcvbuf", "0"), "HELLO rcvbuf=")
        if not m.relay:
            raise errors.ProtocolError("HELLO without a relay address")
        group = f"{self.group[0]}:{self.group[1]}" if self.udp else "-"
        proof = wire.mac(key, "server", m.nonce, kv.get("nonce", "")) if key else None
        m.conn.send(wire.format_line("WELCOME", session=self.session, group=group,
                                     fec=self.opts.fec, mac=proof))
        m.state = "joined"
        m.t_join = net.now()
        self.last_join = m.t_join

    def _c_heard(self, m, args, kv):
        m.heard = True

    def _c_ack(self, m, args, kv):
        if not args:
            raise errors.ProtocolError("ACK without a block number")
        ack = wire.number(args[0], "ACK")
        if ack > m.ack:
            m.ack = ack
            m.last_progress = net.now()

    def _c_nack(self, m, args, kv):
        if not args or m.mode != "mcast" or not m.running():
            return
        seqs = wire.parse_ranges(args[0], limit=4096)
        m.nacks += len(seqs)
        m.tick_nacks += len(seqs)
        self.stats["nack_requests"] += len(seqs)
        t = net.now()
        last = self.last_repair
        queued = self.queued
        for seq in seqs:
            if seq >= self.next:
                continue
            when = last.get(seq)
            if when is None:
                self.tick_first_nacks += 1
            elif seq in queued or t - when < HOLDOFF:
                # Asked for a moment ago, or already waiting to go: one
                # repair serves every receiver that asked.
                self.stats["suppressed"] += 1
                continue
            last[seq] = t
            queued.add(seq)
            self.repairs.append(seq)

    def _c_done(self, m, args, kv):
        m.t_end = net.now()
        m.bytes = wire.number(kv.get("bytes", "0"), "DONE bytes=")
        if self.end_line is None or kv.get("digest") != self.digest_hex:
            self._lose(m, "failed", f"reported digest {kv.get('digest')}")
            return
        m.ack = self.source.count
        m.state = "verified"
        self._close_member(m)

    def _c_failed(self, m, args, kv):
        self._lose(m, "failed", "receiver reported " + " ".join(f"{k}={v}" for k, v in kv.items()))

    CONTROL = {"HELLO": _c_hello, "HEARD": _c_heard, "ACK": _c_ack, "NACK": _c_nack,
               "DONE": _c_done, "FAILED": _c_failed}

    def _close_member(self, m):
        self.loop.forget(m.conn.sock)
        m.conn.flush()
        m.conn.close()
        if m.feed:
            m.feed.close()
            m.feed = None

    def _lose(self, m, state, reason):
        if m.state in TERMINAL or m.state == "refused":
            return
        if m.t_start is None:
            # Never started: not a receiver of this session, nothing to report.
            self._close_member(m)
            m.state = "refused"
            return
        was_running = m.running()
        m.state = state
        m.reason = reason
        m.t_end = net.now()
        m.bytes = m.ack * self.payload
        if m.conn.out:
            m.conn.flush()
        self._close_member(m)
        if was_running:
            self.log(f"receiver {m.name} {state}: {reason}")
            self._rewire(m)

    def _rewire(self, m):
        """A chain lost a link: the sender feeds the next one itself."""
        for p in self.members:
            if p.downstream is m:
                p.downstream = None
        nxt = m.downstream
        m.downstream = None
        while nxt is not None and not nxt.running():
            nxt = nxt.downstream
        if nxt is not None and nxt.feed is None:
            self._start_feed(nxt, nxt.ack)

    def _start_feed(self, m, pos):
        if self.source.base > pos:
            self._lose(m, "failed", f"fell more than --buffer behind the stream (at block {pos})")
            return
        try:
            feed = Feed(self, m, pos)
        except OSError as e:
            self._lose(m, "failed", f"cannot connect to its relay port {m.relay}: {e.strerror}")
            return
        m.feed = feed
        self.feeds.add(feed)
        self.loop.watch(feed.sock, None, feed.on_writable)

    # --- starting ----------------------------------------------------------------

    def gather(self):
        o = self.opts
        t0 = net.now()
        last_probe = 0.0
        self.last_join = t0
        while True:
            self.loop.once(PROBE_EVERY)
            t = net.now()
            if self.udp and t - last_probe >= PROBE_EVERY:
                last_probe = t
                self._send_udp(wire.pack_datagram(self.tagger, wire.PROBE, self.session, 0, b""))
            joined = [m for m in self.members if m.state == "joined"]
            if len(joined) >= o.min_receivers:
                heard = all(m.heard for m in joined) or not self.udp or o.tcp
                if heard or t - self.last_join >= PROBE_GRACE:
                    return joined
            if o.wait is not None and t - t0 >= o.wait:
                if joined and (all(m.heard for m in joined) or not self.udp or o.tcp
                               or t - self.last_join >= PROBE_GRACE):
                    self.log(f"starting with {len(joined)} of {o.min_receivers} receivers")
                    return joined
                if not joined and t - t0 >= o.wait:
                    raise errors.UnavailableError(
                        f"no receiver joined within {o.wait:g} s")

    def start(self, joined):
        o = self.opts
        if o.on_start:
            o.on_start()
        self.gso_cmsg = [(net.SOL_UDP, net.UDP_SEGMENT, struct.pack("=H", self.seg_size))]
        mc = [m for m in joined if m.heard and self.udp and not o.tcp]
        chain = [m for m in joined if m not in mc]
        if not mc:
            self.payload = o.tcp_payload
            if self.udp and not o.tcp:
                self.log("no receiver hears the multicast group; using a TCP chain")
        self.source.payload = self.payload
        self.buf = bytearray(wire.OVERHEAD + self.payload)
        self.mv = memoryview(self.buf)
        rcv = min((m.rcvbuf for m in mc if m.rcvbuf > 0), default=1 << 20)
        # Kernel accounting (truesize) of a GSO datagram runs to 3x its data.
        window_bytes = min(WINDOW_MAX, rcv // 8)
        self.window = max(32, window_bytes // (self.payload + wire.OVERHEAD + 256))
        t = net.now()
        self.state = "run"
        for m in joined:
            m.state = "running"
            m.t_start = t
            m.last_progress = t
        for m in mc:
            m.mode = "mcast"
            m.conn.send(wire.format_line("START", mode="mcast", payload=self.payload,
                                         window=self.window))
        for i, m in enumerate(chain):
            m.mode = "tcp"
            m.downstream = chain[i + 1] if i + 1 < len(chain) else None
            fwd = m.downstream.relay if m.downstream else None
            m.conn.send(wire.format_line("START", mode="tcp", payload=self.payload, forward=fwd))
        if chain:
            self._start_feed(chain[0], 0)
        self.mcast_on = bool(mc)
        if not self.mcast_on and self.udp:
            self.udp.close()
            self.udp = None

    # --- sending --------------------------------------------------------------------

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
        if seq == self.digest_next:
            self.digest.update(tag)
            self.digest_next += 1
            if self.fec_on_build:
                self._fec_add(seq, mv[off + wire.HLEN:end], tag)
        return mv[start:end + wire.TAGLEN]

    fec_on_build = False

    def _fec_add(self, seq, payload, tag):
        self.fec_members.append((len(payload), tag))
        self.fec_acc = wire.xor_into(self.fec_acc, payload)

    def _send_udp(self, data):
        try:
            if len(data) > self.seg_size and self.gso:
                try:
                    self.udp.sendmsg([wire.segment(data, self.seg_size)], self.gso_cmsg)
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
        if self.state == "run":
            self.udp_blocked = True
            self.loop.watch(self.udp, None, self._udp_writable)

    def _mcast_members(self):
        return [m for m in self.members if m.running() and m.mode == "mcast"]

    def pump(self, t):
        """Send repairs, then new blocks, within the rate and the window.

        Returns how long the loop may sleep: 0 to come straight back, a
        token deficit over the rate, or None when only an event (an ACK,
        input, a writable socket) can let more out.
        """
        if not self.mcast_on or self.udp_blocked:
            return None
        mm = self._mcast_members()
        if not mm:
            return None
        self.tokens = min(self.tokens + (t - self.t_tokens) * self.rate,
                          BURST * (self.payload + wire.OVERHEAD))
        self.t_tokens = t
        if self.tokens <= 0:
            self.stats["rate_waits"] += 1
            return -self.tokens / self.rate
        sent = 0
        repairs = self.repairs
        while repairs and sent < BURST and self.tokens > 0:
            seq = repairs.popleft()
            self.queued.discard(seq)
            d = self.sent.get(seq)
            if d is None:
                if not self.source.has(seq):
                    continue
                d = bytes(self.build(seq, memoryview(bytearray(wire.OVERHEAD + self.payload)), 0))
            if not self._send_udp(d):
                repairs.appendleft(seq)
                self.queued.add(seq)
                return None
            self.stats["repairs"] += 1
            self.tokens -= len(d)
            sent += 1
        limit = min(m.ack for m in mm) + self.window
        src = self.source
        fec = self.opts.fec
        while sent < BURST and self.tokens > 0 and self.next < limit and src.has(self.next):
            seq = self.next
            view = self.build(seq, self.mv, 0)
            d = bytes(view)
            self.sent[seq] = d
            self.next += 1
            self.tick_sent += 1
            if not self._send_udp(d):
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

    def _udp_writable(self):
        self.udp_blocked = False
        self.loop.watch(self.udp, None)

    def _send_parity(self, g):
        body = wire.parity_body(self.fec_members, self.fec_acc)
        self.fec_members = []
        self.fec_acc = 0
        d = wire.pack_datagram(self.tagger, wire.PARITY, self.session, g, body)
        if self._send_udp(d):
            self.stats["parity"] += 1

    # --- deciding ---------------------------------------------------------------------

    def tick(self, t):
        mm = self._mcast_members()
        if self.debug:
            self.log(f"t={t - self.t0:.2f} next={self.next} rate={self.rate * 8 / 1e6:.0f}Mbit "
                     f"acks={[m.ack for m in mm]} sent={self.tick_sent} "
                     f"waits={self.stats['window_waits']}/{self.stats['rate_waits']}")
        low = min((m.ack for m in mm), default=self.next)
        for seq in [s for s in self.sent if s < low]:
            del self.sent[seq]
            self.last_repair.pop(seq, None)
        if mm and not self.opts.rate and self.tick_sent >= 8:
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
        if self.opts.evict and len(mm) >= 2:
            self._consider_eviction(mm)
        for m in mm:
            m.tick_nacks = 0
        self.tick_sent = 0
        for m in self.members:
            if m.running() and m.ack < (self.source.count or 1 << 62) \
                    and t - m.last_progress > self.opts.timeout:
                self._lose(m, "failed", f"no progress for {self.opts.timeout:g} s")

    def _consider_eviction(self, mm):
        slow = min(mm, key=lambda m: m.ack)
        lead = max(m.ack for m in mm if m is not slow)
        for m in mm:
            if m is not slow:
                m.lag_ticks = 0
        if lead - slow.ack >= self.window // 2:
            slow.lag_ticks += 1
        else:
            slow.lag_ticks = 0
        sent = max(1, self.tick_sent)
        others = sorted(m.tick_nacks for m in mm if m is not slow)
        median = others[(len(others) - 1) // 2]
        if slow.tick_nacks / sent > 0.2 and slow.tick_nacks > 3 * median:
            slow.lossy_ticks += 1
        else:
            slow.lossy_ticks = 0
        if slow.lag_ticks >= EVICT_TICKS or slow.lossy_ticks >= LOSSY_TICKS:
            self.evict(slow)

    def evict(self, m):
        self.log(f"receiver {m.name} falls behind: continuing it over TCP")
        self.stats["evictions"] += 1
        m.mode = "evicted"
        m.evicted = True
        m.conn.send(wire.format_line("EVICT"))
        self._start_feed(m, m.ack)

    # --- the whole run -----------------------------------------------------------------

    def run(self):
        self.open()
        joined = self.gather()
        self.start(joined)
        self.fec_on_build = bool(self.opts.fec) and self.mcast_on
        self.t0 = net.now()
        self.debug = getattr(self.opts, "debug", False)
        src = self.source
        stdin_watched = False
        last_tick = net.now()
        last_ping = last_tick
        while True:
            t = net.now()
            wait = self.pump(t)
            if self.end_line is None and src.count is not None and self.digest_next >= src.count:
                self.digest_hex = self.digest.hexdigest()
                self.end_line = wire.format_line("END", count=src.count, bytes=src.size,
                                                 digest=self.digest_hex)
                for m in self.members:
                    if m.running():
                        m.conn.send(self.end_line)
            want_in = src.wants_input()
            if want_in != stdin_watched:
                self.loop.watch(src.fd, src.on_readable if want_in else None)
                stdin_watched = want_in
            for f in list(self.feeds):
                if f.paused and src.has(f.pos):
                    f.paused = False
                    self.loop.watch(f.sock, None, f.on_writable)
            if not any(m.running() for m in self.members):
                break
            ts = net.now()
            self.loop.once(0.01 if wait is None else min(wait, 0.01))
            self.stats["idle_seconds"] += net.now() - ts
            t = net.now()
            if t - last_tick >= TICK:
                self.tick(t)
                last_tick = t
            if t - last_ping >= 5:
                last_ping = t
                for m in self.members:
                    if m.running():
                        m.conn.send(wire.format_line("PING"))
            self._release()
        return self.report()

    def _release(self):
        src = self.source
        if src.count is not None and src.base >= src.count:
            return
        low = self.digest_next
        for m in self.members:
            if m.running():
                low = min(low, m.ack)
        for f in self.feeds:
            low = min(low, f.pos)
        if self.mcast_on:
            low = min(low, self.next)
        src.release(low)

    def report(self):
        rows = []
        for m in self.members:
            if m.state == "refused":
                continue
            elapsed = (m.t_end - m.t_start) if m.t_start and m.t_end else 0.0
            via = {"mcast": "multicast", "tcp": "chain", "evicted": "evicted"}.get(m.mode, "-")
            rows.append(dict(receiver=m.name, status=m.state, bytes=m.bytes,
                             seconds=round(elapsed, 3), via=via, reason=m.reason,
                             nacks=m.nacks))
        self.stats["final_rate_mbit"] = round(self.rate * 8 / 1e6, 1)
        self.stats["idle_seconds"] = round(self.stats["idle_seconds"], 3)
        return dict(bytes=self.source.size, blocks=self.source.count,
                    digest=getattr(self, "digest_hex", None), session=self.session,
                    receivers=rows, **self.stats)
