"""The gridmcast sender: gather receivers on a TCP control address, then
put the stream on the multicast group (pump.py) and feed TCP relay chains
(feed.py) for the receivers multicast cannot reach or that fell behind.

Everything runs on the one event loop (io.loop).  Each periodic duty —
probes, the start's grace and deadline, the rate, the tick that adapts the
rate, evicts and times out receivers, PING — is a timer armed for when it is
next due and only while it has work, so an idle sender sleeps in select()."""

import secrets

from gridtools.io import loop as ioloop
from gridtools.io import net as ionet
from gridtools.proto import address, errors
from gridtools.proto import wire as proto
from gridtools.mcast import control, feed, net, pump
from gridtools.mcast import wire

PROBE_EVERY = 0.05       # seconds between probes while a receiver has not heard one
PROBE_GRACE = 1.0        # how long a joined receiver has to hear a probe
PROBE_LATE = 1.0         # and the probes after that, for one that hears late
TICK = 0.1               # rate and eviction decisions, while blocks are in flight
PING_EVERY = 5.0         # so a receiver of a quiet stream does not time out
PROGRESS_EVERY = 0.5     # seconds between progress lines, when asked for
WINDOW_MAX = 16 << 20    # bytes in flight beyond the slowest receiver, at most
EVICT_TICKS = 15         # ticks a receiver may hold the group back by half a window
LOSSY_TICKS = 3          # ticks a receiver may lose far more than the others

TERMINAL = ("verified", "failed", "dead")


def greeting(nonce, key):
    """The sender's first line: the hub protocol's HELLO, role sender."""
    return proto.hello("sender", nonce, auth=proto.AUTH if key is not None else "none")


class Member:
    """One receiver, as the sender sees it."""

    def __init__(self, conn, number):
        self.conn = conn
        self.name = conn.name
        self.number = number
        self.state = "handshake"
        self.nonce = proto.new_nonce()
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


class Sender:
    def __init__(self, opts, source, log):
        self.opts = opts
        self.source = source
        self.log = log
        self.tagger = wire.make_tagger(opts.key)
        self.loop = ioloop.Loop()
        self.now = self.loop.time
        self.session = secrets.randbits(32)
        self.members = []
        self.feeds = set()
        self.state = "gather"
        self.pump = None              # the multicast side, while there is one
        self.mcast_on = False
        self.payload = opts.payload
        self.blocks = pump.Blocks(source, self.tagger, self.session)
        self.end_line = None
        self.stats = {"datagrams": 0, "repairs": 0, "suppressed": 0, "nack_requests": 0,
                      "parity": 0, "evictions": 0, "window_waits": 0, "rate_waits": 0,
                      "send_waits": 0}
        self.stepping = False         # a _step is queued for the end of this turn
        self.stdin_watched = False
        self.timers = ioloop.Duties(self.loop)   # duty -> its armed timer
        self.debug = getattr(opts, "debug", False)

    # --- progress --------------------------------------------------------------

    def _progress(self):
        """A progress line (on a terminal's stderr; cli/gridmcast decides):
        bytes read, where the slowest receiver is, the rate, how many are
        verified."""
        if self.state != "run":
            return
        members = [m for m in self.members if m.state in ("running", "verified")]
        verified = sum(1 for m in members if m.state == "verified")
        slowest = min((m.ack for m in members if m.state == "running"), default=0)
        done = min(slowest * self.payload, self.source.size)
        secs = max(self.now() - self.t_run, 1e-6)
        self.opts.progress(f"{self.source.size / 2**20:.1f} MiB read, slowest receiver at "
                           f"{done / 2**20:.1f} MiB, {done / secs / 2**20:.1f} MiB/s, "
                           f"{verified}/{len(members)} verified")
        self.timers.arm("progress", self.now() + PROGRESS_EVERY, self._progress)

    # --- gathering -------------------------------------------------------------

    def open(self):
        o = self.opts
        self.listener = ionet.listen(control.control_address(*o.control), backlog=64)
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
            udp = None
            try:
                udp = net.udp_sender(self.group, o.ttl, iface)
                self.pump = pump.Pump(self.loop, udp, o, self.log, self.stats, self._kick)
                self.pump.connect(self.group)
            except OSError as e:
                self.log(f"no multicast from {iface or 'the default interface'}: {e.strerror}; using TCP")
                if udp is not None:
                    udp.close()
                self.pump = None
        self.loop.add_reader(self.listener.fileno(), self._on_accept)
        group = f" group {self.group[0]}:{self.group[1]}" if self.pump else " tcp chain"
        self.log(f"control {address.join(*self.control_addr[:2])}{group}", always=True)
        if o.on_open:
            o.on_open(self.control_addr)

    def _on_accept(self):
        try:
            sock, addr = self.listener.accept()
        except OSError:
            return
        conn = control.Conn(self.loop, sock, address.join(*addr[:2]))
        m = Member(conn, len(self.members))
        self.members.append(m)
        if self.state != "gather":
            self._refuse(m, errors.TEMPFAIL, "the session has already started; try again")
            return
        conn.send(greeting(m.nonce, self.opts.key))
        self.loop.add_reader(conn.fd, self._on_member, m)

    def _on_member(self, m):
        m.conn.recv()
        try:
            for msg in m.conn.messages():
                if m.conn.sock is None:
                    return          # refused or lost: what it sent after that is moot
                handler = self.CONTROL.get(msg.verb)
                if handler is None:
                    raise proto.WireError(f"unexpected {msg.verb} from a receiver")
                handler(self, m, msg)
        except (proto.WireError, errors.GridError) as e:
            # The receiver hears why, as a hub's peer would.
            m.conn.send(e.reply() if isinstance(e, proto.WireError) else proto.error(e.code, str(e)))
            self._lose(m, "failed", str(e))
            return
        if m.conn.eof:
            self._lose(m, "dead", f"connection lost after {m.ack * self.payload} bytes"
                       if m.state == "running" else "connection lost")

    def _refuse(self, m, code, why):
        """Turn a receiver away in the handshake with ERR code, and forget it."""
        m.conn.send(proto.error(code, why))
        self._lose(m, "refused", why)

    def _c_hello(self, m, msg):
        if m.state != "handshake":
            raise proto.WireError("HELLO twice")
        if self.state != "gather":
            self._refuse(m, errors.TEMPFAIL, "the session has already started; try again")
            return
        role, nonce = proto.check_hello(msg, roles=("receiver",))
        key = self.opts.key
        if key is not None and not proto.check_mac(key, role, m.nonce, nonce, msg.get("mac")):
            self.log(f"receiver {m.name}: authentication failed (a wrong or no group key)")
            self._refuse(m, errors.NOPERM, f"authentication as {role} failed")
            return
        m.relay = msg.get("relay")
        m.rcvbuf = msg.int("rcvbuf", 0)
        if not m.relay:
            raise proto.WireError("HELLO without a relay address", field="relay")
        group = f"{self.group[0]}:{self.group[1]}" if self.pump else "-"
        m.conn.send(proto.format("WELCOME", proto.VERSION, role="sender",
                                 mac=proto.mac(key, "sender", nonce, m.nonce) if key is not None
                                 else None,
                                 session=self.session, group=group, fec=self.opts.fec))
        m.state = "joined"
        m.t_join = self.last_join = self.now()
        if self.pump:
            self._probe()
        self._gather_check()

    def _c_heard(self, m, msg):
        m.heard = True
        if self.state == "gather":
            self._gather_check()

    def _probe(self):
        """Probe the group while a joined receiver has not heard it: often
        in its grace period, then now and then, for one that hears late."""
        if self.state != "gather":
            return
        deaf = [m for m in self.members if m.state == "joined" and not m.heard]
        if not deaf:
            return
        if "probe" not in self.timers:
            self.pump.send(wire.pack_datagram(self.tagger, wire.PROBE, self.session, 0, b""))
        t = self.now()
        every = PROBE_EVERY if t - self.last_join < PROBE_GRACE else PROBE_LATE
        self.timers.arm("probe", t + every, self._probe)

    def _gather_check(self):
        """Start when enough receivers have joined and heard the group (or
        had their grace to); after --wait, with whoever joined."""
        o = self.opts
        t = self.now()
        joined = [m for m in self.members if m.state == "joined"]
        all_heard = all(m.heard for m in joined) or not self.pump
        graced = t - self.last_join >= PROBE_GRACE
        waited = o.wait is not None and t - self.t0 >= o.wait
        if joined and (all_heard or graced) and (len(joined) >= o.min_receivers or waited):
            if len(joined) < o.min_receivers:
                self.log(f"starting with {len(joined)} of {o.min_receivers} receivers")
            self.start(joined)
            return
        if waited and not joined:
            raise errors.UnavailableError(f"no receiver joined within {o.wait:g} s")
        if joined and not all_heard:
            self.timers.arm("grace", self.last_join + PROBE_GRACE, self._gather_check)

    # --- the control lines of a running session ---------------------------------

    def _c_ack(self, m, msg):
        ack = proto.uint(msg.arg(0), "ACK", field="seq")
        if ack > m.ack:
            m.ack = ack
            m.last_progress = self.now()
            self._kick()

    def _c_nack(self, m, msg):
        if not msg.args or m.mode != "mcast" or not m.running():
            return
        seqs = wire.parse_ranges(msg.args[0], limit=4096)
        m.nacks += len(seqs)
        m.tick_nacks += len(seqs)
        self.stats["nack_requests"] += len(seqs)
        self.pump.nack(seqs, self.now())
        self._kick()

    def _c_done(self, m, msg):
        m.t_end = self.now()
        m.bytes = msg.int("size", 0)
        if self.end_line is None or msg.get("digest") != self.digest_hex:
            self._lose(m, "failed", f"reported digest {msg.get('digest')}")
            return
        m.ack = self.source.count
        m.state = "verified"
        self._close_member(m)
        self._kick()

    def _c_failed(self, m, msg):
        self._lose(m, "failed", "receiver reported " + " ".join(f"{k}={v}" for k, v in msg.kv.items()))

    def _c_err(self, m, msg):
        self._lose(m, "failed", "receiver gave up: " + (msg.args[1] if len(msg.args) > 1 else ""))

    CONTROL = {"HELLO": _c_hello, "HEARD": _c_heard, "ACK": _c_ack, "NACK": _c_nack,
               "DONE": _c_done, "FAILED": _c_failed, "ERR": _c_err}

    def _close_member(self, m):
        m.conn.flush()
        m.conn.close()
        if m.feed:
            self._drop_feed(m.feed)

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
        m.t_end = self.now()
        m.bytes = m.ack * self.payload
        self._close_member(m)
        if was_running:
            self.log(f"receiver {m.name} {state}: {reason}")
            self._rewire(m)
        self._kick()

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
            f = feed.Feed(self.loop, self.blocks, m, pos, self.payload, self._on_feed)
        except OSError as e:
            self._lose(m, "failed", f"cannot connect to its relay port {m.relay}: {e.strerror}")
            return
        m.feed = f
        self.feeds.add(f)

    def _on_feed(self, f, error):
        if f.closed:
            self._drop_feed(f)
        if error is not None:
            self._lose(f.member, "failed", error)
        self._kick()

    def _drop_feed(self, f):
        f.close()
        self.feeds.discard(f)
        if f.member.feed is f:
            f.member.feed = None

    # --- starting ----------------------------------------------------------------

    def start(self, joined):
        o = self.opts
        for duty in ("probe", "grace", "wait"):
            self.timers.disarm(duty)
        if o.on_start:
            o.on_start()
        mc = [m for m in joined if m.heard and self.pump and not o.tcp]
        chain = [m for m in joined if m not in mc]
        if not mc:
            self.payload = o.tcp_payload
            if self.pump and not o.tcp:
                self.log("no receiver hears the multicast group; using a TCP chain")
        self.source.payload = self.payload
        rcv = min((m.rcvbuf for m in mc if m.rcvbuf > 0), default=1 << 20)
        # Kernel accounting (truesize) of a GSO datagram runs to 3x its data.
        window_bytes = min(WINDOW_MAX, rcv // 8)
        self.window = max(32, window_bytes // (self.payload + wire.OVERHEAD + 256))
        t = self.now()
        self.state = "run"
        self.t_run = t
        if getattr(o, "progress", None) is not None:
            self.timers.arm("progress", t + PROGRESS_EVERY, self._progress)
        for m in joined:
            m.state = "running"
            m.t_start = t
            m.last_progress = t
        for m in mc:
            m.mode = "mcast"
            m.conn.send(proto.format("START", mode="mcast", payload=self.payload,
                                     window=self.window))
        for i, m in enumerate(chain):
            m.mode = "tcp"
            m.downstream = chain[i + 1] if i + 1 < len(chain) else None
            fwd = m.downstream.relay if m.downstream else None
            m.conn.send(proto.format("START", mode="tcp", payload=self.payload, forward=fwd))
        if chain:
            self._start_feed(chain[0], 0)
        self.mcast_on = bool(mc)
        if self.mcast_on:
            self.pump.start(self.blocks, self.payload, t)
        elif self.pump:
            self.pump.close()
            self.pump = None
        self.timers.arm("ping", t + PING_EVERY, self._ping)
        self._kick()

    # --- running -----------------------------------------------------------------

    def _kick(self):
        """Something changed (an ACK, input, a writable socket, a member
        gone): look at everything once, at the end of this loop turn."""
        if not self.stepping and self.state == "run":
            self.stepping = True
            self.loop.call_soon(self._step)

    def _step(self):
        self.stepping = False
        t = self.now()
        src = self.source
        mm = self._mcast_members()
        if self.mcast_on and mm:
            limit = min(m.ack for m in mm) + self.window
            wait = self.pump.run(t, limit)
            if wait == 0:
                self._kick()
            elif wait is not None:
                self.timers.arm("rate", t + wait, self._kick)
        if self.end_line is None and src.count is not None and self.blocks.next >= src.count:
            self.digest_hex = self.blocks.digest.hexdigest()
            self.end_line = proto.format("END", count=src.count, size=src.size,
                                         digest=self.digest_hex)
            for m in self.members:
                if m.running():
                    m.conn.send(self.end_line)
        want_in = src.wants_input()
        if want_in != self.stdin_watched:
            if want_in:
                self.loop.add_reader(src.fd, self._on_input)
            else:
                self.loop.remove_reader(src.fd)
            self.stdin_watched = want_in
        for f in list(self.feeds):
            if f.paused and src.has(f.pos):
                f.resume()
        if not any(m.running() for m in self.members):
            self.loop.stop()
            return
        if self._busy(t):
            self.timers.arm("tick", t + TICK, self._tick)
        self._release()

    def _on_input(self):
        t = self.now()
        for m in self.members:
            if m.running() and m.ack >= self.source.avail:
                # Caught up until now: waiting for input was no stall of its.
                m.last_progress = t
        self.source.on_readable()
        self._kick()

    def _busy(self, t):
        """True while some receiver lacks blocks the sender has (so the
        tick has losses, lag and stalls to judge); a receiver with all
        there is is making all the progress it can."""
        busy = self.pump is not None and bool(self.pump.repairs)
        avail = self.source.avail
        for m in self.members:
            if m.running():
                if m.ack < avail:
                    busy = True
                else:
                    m.last_progress = t
        return busy

    def _mcast_members(self):
        return [m for m in self.members if m.running() and m.mode == "mcast"]

    def _ping(self):
        running = [m for m in self.members if m.running()]
        for m in running:
            m.conn.send(proto.format("PING"))
        if running:
            self.timers.arm("ping", self.now() + PING_EVERY, self._ping)

    def _tick(self):
        t = self.now()
        self._busy(t)                 # a receiver with all there is is not stalled
        mm = self._mcast_members()
        p = self.pump if self.mcast_on else None
        if self.debug and p:
            self.log(f"t={t - self.t_run:.2f} next={p.next} rate={p.rate * 8 / 1e6:.0f}Mbit "
                     f"acks={[m.ack for m in mm]} sent={p.tick_sent} "
                     f"waits={self.stats['window_waits']}/{self.stats['rate_waits']}")
        if p:
            p.forget_below(min((m.ack for m in mm), default=p.next))
            if mm:
                p.adapt()
            p.tick_first_nacks = 0
        if self.opts.evict and len(mm) >= 2:
            self._consider_eviction(mm)
        for m in mm:
            m.tick_nacks = 0
        if p:
            p.end_tick()
        for m in self.members:
            if m.running() and m.ack < (self.source.count or 1 << 62) \
                    and t - m.last_progress > self.opts.timeout:
                self._lose(m, "failed", f"no progress for {self.opts.timeout:g} s")
        if self._busy(t):
            self.timers.arm("tick", t + TICK, self._tick)

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
        sent = max(1, self.pump.tick_sent)
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
        m.conn.send(proto.format("EVICT"))
        self._start_feed(m, m.ack)

    def _release(self):
        src = self.source
        if src.count is not None and src.base >= src.count:
            return
        low = self.blocks.next
        for m in self.members:
            if m.running():
                low = min(low, m.ack)
        for f in self.feeds:
            low = min(low, f.pos)
        if self.mcast_on:
            low = min(low, self.pump.next)
        src.release(low)

    # --- the whole run -----------------------------------------------------------------

    def run(self):
        try:
            self.t0 = self.last_join = self.now()
            self.open()
            if self.opts.wait is not None:
                self.timers.arm("wait", self.t0 + self.opts.wait, self._gather_check)
            self.loop.run_forever()
            for m in self.members:
                if m.conn.sock is not None:
                    m.conn.drain(1.0)
        finally:
            self.loop.close()
        return self.report()

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
        rate = self.pump.rate if self.pump else (self.opts.rate / 8 if self.opts.rate
                                                  else pump.AUTO_START)
        self.stats["final_rate_mbit"] = round(rate * 8 / 1e6, 1)
        return dict(bytes=self.source.size, blocks=self.source.count,
                    digest=getattr(self, "digest_hex", None), session=self.session,
                    receivers=rows, **self.stats)
