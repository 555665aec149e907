"""The gridmcast receiver: join a sender's session over TCP, take blocks from
the multicast group (repairing losses by NACK and parity) or from a TCP relay
chain (forwarding each block before keeping it), check every block's tag as
it arrives, and finish only with the whole-stream digest confirmed.

The join (connect and handshake, with a deadline) happens before the event
loop (io.loop) starts; after it nothing blocks.  NACKs, the ACK when the
stream pauses and the idle timeout are timers armed for when they are due,
so a receiver waiting for data sleeps in select()."""

import random
import socket
import time

from gridtools.io import loop as ioloop
from gridtools.io import net as ionet
from gridtools.proto import address, errors
from gridtools.proto import wire as proto
from gridtools.mcast import control, net, relay
from gridtools.mcast import wire
from gridtools.mcast.sink import Sink

ACK_EVERY = 64            # blocks between progress reports
PENDING_BEFORE_START = 256  # out-of-order blocks kept before START says the window
WINDOW_SLACK = 64           # blocks of slack past the window (acks lag a little)
NACK_DELAY = 0.005        # a gap is NACKed this soon after it shows (others join it)
NACK_RETRY = 0.06         # a gap NACKed this long ago without repair is asked again
QUIET = 0.02              # the group is quiet after this long without data
RECV_SLICE = 0.005        # the most time one wake-up spends reading datagrams
JOIN_RETRY_MAX = 0.5      # seconds between tries to reach a sender not listening yet
RECV_BATCH = 512          # datagrams taken per wake-up before the control socket is looked at


def exit_code(code):
    """The exit code for a failed handshake or an ERR from the sender: 75
    (the session has started) and 77 (keys) as they are, any other code
    the protocol's 76 (gridtools(7), Control lines)."""
    return code if code in (errors.TEMPFAIL, errors.NOPERM) else errors.PROTOCOL


class Receiver:
    def __init__(self, control, output=None, key=None, loss=0.0, interface=None,
                 timeout=30.0, wait=0.0, log=None, debug=False):
        self.control_addr = control
        self.wait = wait
        self.key = key
        self.tagger = wire.make_tagger(key)
        self.loss = loss
        self.interface = interface
        self.timeout = timeout
        self.log = log or (lambda msg: None)
        self.debug = debug
        self.sink = Sink(output)
        self.loop = ioloop.Loop()
        self.now = self.loop.time
        self.timers = ioloop.Duties(self.loop)   # duty -> its armed timer
        self.udp = None
        self.relay = None
        self.session = None
        self.fec = 0
        self.started = False
        self.mode = None
        self.next = 0               # next block to write
        self.top = -1               # highest block seen
        self.pending = {}           # seq -> (payload, tag), waiting for a gap to fill
        self.window = PENDING_BEFORE_START  # blocks past next that may be kept
        self.recent = {}            # written payloads still needed by parity groups
        self.parity = {}            # group -> (members, xor)
        self.nacked = {}            # seq -> time last asked
        self.total = None           # block count, known at END
        self.end_digest = None
        self.end_bytes = None
        self.done = False
        self.last_ack = -1
        self.ubuf = bytearray(65536)    # the largest UDP datagram
        self.umv = memoryview(self.ubuf)
        self.heard = False
        self.pieces = {}            # (kind, seq) -> (count, {index: piece})
        self.last_data = self.now()
        self.stats = {"datagrams": 0, "dropped": 0, "rejected": 0, "duplicates": 0,
                      "beyond_window": 0,
                      "nacks": 0, "recovered": 0, "frames": 0, "reads": 0}

    # --- joining -----------------------------------------------------------

    def _connect(self):
        """The control connection; for --wait seconds a sender that is not
        there yet is tried again, less and less often."""
        addr = control.control_address(*self.control_addr)
        give_up = time.monotonic() + self.wait
        pause = 0.02
        while True:
            try:
                return ionet.connect(addr, timeout=self.timeout)
            except errors.UnavailableError:
                if time.monotonic() + pause > give_up:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, JOIN_RETRY_MAX)

    def join(self):
        """The hub protocol's handshake, as role receiver to the sender's
        role sender (the acceptor); then the group, if we can hear one."""
        sock = self._connect()
        sock.settimeout(self.timeout)
        where = f"sender {address.join(*self.control_addr)}"
        reader = proto.Reader()
        try:
            greeting = self._handshake_message(sock, reader)
            local_ip = sock.getsockname()[0]
            listener = ionet.listen(control.control_address(local_ip, 0), backlog=64)
            self.relay = relay.Relay(self.loop, listener, self.log, self._frames)
            probe_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rcvbuf = net.set_buffer(probe_sock, socket.SO_RCVBUF,
                                    getattr(socket, "SO_RCVBUFFORCE", 33), net.BIG_BUFFER)
            probe_sock.close()
            line, check = proto.connect_as(greeting, "receiver", self.key, peer_roles=("sender",),
                                           hint="--key-file", relay=self.relay.address,
                                           rcvbuf=rcvbuf)
            self._handshake_send(sock, line)
            welcome = check(self._handshake_message(sock, reader))
        except proto.WireError as e:
            raise ionet.grid_error(exit_code(e.code), f"{where}: {e}") from None
        try:
            if "session" not in welcome.kv:
                raise proto.WireError("WELCOME without session=")
            self.session = welcome.int("session", hi=(1 << 32) - 1)
            self.fec = welcome.int("fec", 0, hi=wire.MAX_FEC)
        except proto.WireError as e:
            raise errors.ProtocolError(f"{where}: {e}") from None
        group = welcome.get("group", "-")
        if group != "-" and self._can_multicast(local_ip):
            ghost, gport = wire.parse_hostport(group, "group")
            iface = self.interface or local_ip
            try:
                self.udp, _ = net.udp_receiver((ghost, gport), iface)
            except OSError as e:
                self.log(f"cannot join {group}: {e.strerror}; asking for TCP")
                self.udp = None
        # What came after the WELCOME (a START, when the sender starts at
        # once) stays in the reader the control connection goes on with.
        self.ctl = control.Conn(self.loop, sock, "sender", reader=reader)
        self.loop.add_reader(self.ctl.fd, self._on_control)
        if self.udp:
            self.loop.add_reader(self.udp.fileno(), self._on_udp)

    def _handshake_message(self, sock, reader):
        """The next message of the handshake, read blocking (the loop has
        not started yet) within the socket's timeout."""
        while True:
            msg = next(reader, None)
            if msg is not None:
                return msg
            try:
                data = sock.recv(65536)
            except socket.timeout:
                raise errors.UnavailableError(
                    f"the sender said nothing for {self.timeout:g} s in the handshake") from None
            except OSError as e:
                raise errors.UnavailableError(
                    f"the sender went away during the handshake: {e.strerror or e}") from None
            if not data:
                raise errors.UnavailableError("the sender closed the connection during the handshake")
            reader.feed(data)

    @staticmethod
    def _handshake_send(sock, line):
        try:
            sock.sendall(line)
        except OSError as e:
            raise errors.UnavailableError(
                f"the sender went away during the handshake: {e.strerror or e}") from None

    @staticmethod
    def _can_multicast(local_ip):
        return ":" not in local_ip

    # --- the loop ----------------------------------------------------------

    def run(self):
        try:
            self.join()         # a refused join leaves no .part file behind either
            self.loop.run_forever()
            self.ctl.drain(5.0)
            if self.relay:
                self.relay.drain(self.timeout)
        except BaseException:
            self.sink.discard()
            raise
        finally:
            if self.stats["rejected"]:
                self.log(f"rejected {wire.count(self.stats['rejected'], 'block')} "
                         "that failed the integrity check")
            self.loop.close()
        return self._result()

    # --- timers ---------------------------------------------------------------

    def _on_idle(self):
        """No data (nor PING) for --timeout: the sender is gone or stuck."""
        if self.done:
            return
        if self.now() - self.last_data >= self.timeout:
            raise errors.UnavailableError(
                f"no data for {self.timeout:.0f} s after {wire.count(self.sink.bytes, 'byte')}")
        self.timers.arm("idle", self.last_data + self.timeout, self._on_idle)

    def _check(self):
        """NACK the gaps that are due, ACK once the stream pauses, and come
        back when the next of those is due (or not at all, all being well)."""
        if self.done:
            return
        t = self.now()
        due = self._nack(t) if self.udp else None
        quiet_at = self.last_data + QUIET
        if t >= quiet_at:
            if self.next != self.last_ack:
                self._ack()
        elif (self.next != self.last_ack or self.pending or self.top >= self.next
              or (self.total is not None and self.next < self.total)):
            # Some of it waits for the group to be quiet: the ACK, the tail
            # after END, the newest parity group.
            due = quiet_at if due is None else min(due, quiet_at)
        if due is not None:
            self.timers.arm("check", due, self._check)

    def _result(self):
        return dict(bytes=self.sink.bytes, digest=self.end_digest, mode=self.mode, **self.stats)

    # --- control ------------------------------------------------------------

    def _on_control(self):
        self.ctl.recv()
        try:
            for msg in self.ctl.messages():
                self._control(msg)
                if self.done:
                    return
        except proto.WireError as e:
            raise errors.ProtocolError(f"the sender: {e}") from None
        if self.ctl.eof:
            raise errors.UnavailableError(
                f"the sender went away after {wire.count(self.sink.bytes, 'byte')}")

    def _control(self, msg):
        """One control line from the sender, by the table; a field that
        breaks the grammar is a protocol error (76), as any other."""
        handler = self.CONTROL.get(msg.verb)
        if handler is None:
            raise errors.ProtocolError(f"unexpected {msg.verb} from the sender")
        try:
            handler(self, msg)
        except proto.WireError as e:
            raise errors.ProtocolError(f"the sender: {e}") from None

    def _c_start(self, msg):
        self.mode = msg.get("mode", "mcast")
        self.payload = msg.int("payload", 0, hi=wire.MAX_PAYLOAD)
        # The sender never runs further ahead of us than its window: blocks
        # past it are no one's we will need, and are not kept.
        self.window = msg.int("window", PENDING_BEFORE_START, lo=1, hi=1 << 20)
        self.started = True
        self.last_data = self.now()
        if self.mode != "mcast":
            self._drop_udp()
        self.relay.start(msg.get("forward"))
        self.timers.arm("idle", self.last_data + self.timeout, self._on_idle)
        self.timers.arm("check", self.now() + NACK_DELAY, self._check)

    def _c_evict(self, msg):
        self.log("evicted from the multicast group; continuing over TCP")
        self.mode = "evicted"
        self._drop_udp()

    def _c_end(self, msg):
        if not {"count", "size", "digest"} <= msg.kv.keys():
            raise errors.ProtocolError(f"END without count=, size= and digest=: {msg.kv}")
        self.total = msg.int("count")
        self.end_bytes = msg.int("size")
        self.end_digest = msg.get("digest")
        self.last_data = self.now()
        self._maybe_finish()
        self.timers.arm("check", self.last_data + QUIET, self._check)

    def _c_ping(self, msg):
        self.last_data = self.now()

    def _c_err(self, msg):
        """The sender gave up on us, saying why with the hub's codes."""
        raise ionet.grid_error(exit_code(proto.err_code(msg)), "the sender: "
                               + (msg.args[1] if len(msg.args) > 1 else "error"))

    CONTROL = {"START": _c_start, "EVICT": _c_evict, "END": _c_end, "PING": _c_ping,
               "ERR": _c_err}

    def _send(self, line):
        self.ctl.send(line)

    def _drop_udp(self):
        if self.udp:
            self.loop.remove_reader(self.udp.fileno())
            self.udp.close()
            self.udp = None

    # --- multicast ------------------------------------------------------------

    def _on_udp(self):
        mv = self.umv
        recvmsg_into = self.udp.recvmsg_into
        # Bounded in time too: a big block costs ~0.1 ms, and gaps must be
        # NACKed within a few milliseconds, not after a whole batch.
        now = self.now
        until = now() + RECV_SLICE
        for _ in range(RECV_BATCH):
            if now() > until:
                break
            try:
                n, anc, _, _ = recvmsg_into([mv], 64)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            self.stats["reads"] += 1
            gso = net.gro_size(anc) if anc else 0
            if gso and gso < n:
                # Several packets coalesced by the kernel, each gso bytes:
                # most often every piece of one datagram.
                whole = wire.join_segments(mv[:n], gso)
                if whole is not None:
                    self._packet(whole)
                    continue
                for off in range(0, n, gso):
                    self._packet(mv[off:min(off + gso, n)])
            else:
                self._packet(mv[:n])
            if self.udp is None:
                break

    def _packet(self, pkt):
        if len(pkt) > 3 and pkt[3] == wire.SEGMENT:
            self._segment(pkt)
            return
        if self.loss and random.random() < self.loss:
            self.stats["dropped"] += 1
            return
        self.stats["datagrams"] += 1
        self._datagram(pkt)

    def _segment(self, pkt):
        """Collect the pieces of a datagram cut to fit the path MTU."""
        try:
            sess, seq, inner, index, count, data = wire.parse_segment(pkt)
        except errors.ProtocolError:
            self.stats["rejected"] += 1
            return
        if sess != self.session or (inner == wire.DATA and seq < self.next):
            return
        key = (inner, seq)
        entry = self.pieces.get(key)
        if entry is None or entry[0] != count:
            entry = self.pieces[key] = (count, {})
            if len(self.pieces) > 1024:
                self.pieces.pop(next(iter(self.pieces)))
        parts = entry[1]
        parts[index] = bytes(data)
        if len(parts) == count:
            del self.pieces[key]
            self._packet(b"".join(parts[i] for i in range(count)))

    def _datagram(self, dgram):
        if len(dgram) >= wire.OVERHEAD and dgram[3] == wire.DATA:
            # A repair someone else asked for: skip it before paying for its hash.
            seq = int.from_bytes(dgram[8:16], "big")
            if seq < self.next or seq in self.pending:
                self.stats["duplicates"] += 1
                return
        try:
            kind, sess, seq, body = wire.parse_datagram(self.tagger, dgram, self.session)
        except errors.ProtocolError:
            self.stats["rejected"] += 1
            return
        if kind == wire.DATA:
            # Blocks may overtake the START line (another socket): keep them.
            self.last_data = self.now()
            self._block(seq, body, wire.datagram_tag(dgram))
        elif kind == wire.PARITY:
            self._parity(seq, body)
        elif kind == wire.PROBE:
            if not self.started and not self.heard:
                self.heard = True
                self._send(proto.format("HEARD"))

    def _block(self, seq, payload, tag):
        if seq < self.next or seq in self.pending:
            self.stats["duplicates"] += 1
            return
        if seq > self.top:
            self.top = seq
        if self.total is not None and seq >= self.total:
            self.stats["rejected"] += 1
            return
        if seq != self.next:
            if seq - self.next >= self.window + self.fec + WINDOW_SLACK:
                # Past anything the sender may have in flight: a stranger's
                # block, or a sender gone wrong.  Not kept: memory is bounded.
                self.stats["beyond_window"] += 1
                return
            # Kept for later: copy out of the receive buffer it points into.
            self.pending[seq] = (bytes(payload), tag)
            if self.started:
                self.timers.arm("check", self.now() + NACK_DELAY, self._check)
            if self.fec:
                self._try_recover(seq // self.fec)
            return
        self._write(seq, payload, tag)
        pending = self.pending
        while self.next in pending:
            p, t = pending.pop(self.next)
            self._write(self.next, p, t)
        if self.next - self.last_ack >= ACK_EVERY:
            self._ack()
        if self.total is not None and self.next >= self.total:
            self._maybe_finish()
        elif self.started and "check" not in self.timers:
            self.timers.arm("check", self.last_data + QUIET, self._check)

    def _write(self, seq, payload, tag):
        self.sink.put(payload, tag)
        self.next = seq + 1
        if self.fec:
            self.recent[seq] = bytes(payload)
            self.recent.pop(seq - 2 * self.fec, None)
            g = seq // self.fec
            if (seq + 1) % self.fec == 0:
                self.parity.pop(g, None)
        self.nacked.pop(seq, None)

    def _ack(self):
        self.last_ack = self.next
        self._send(proto.format("ACK", self.next))

    def _parity(self, g, body):
        if (g + 1) * self.fec <= self.next:
            return
        try:
            members, xor = wire.parse_parity(body)
        except errors.ProtocolError:
            self.stats["rejected"] += 1
            return
        self.parity[g] = (members, bytes(xor))
        if len(self.parity) > 4096:
            self.parity.pop(next(iter(self.parity)))
        self._try_recover(g)

    def _have(self, seq):
        if seq < self.next:
            return self.recent.get(seq)
        got = self.pending.get(seq)
        return got[0] if got else None

    def _try_recover(self, g):
        entry = self.parity.get(g)
        if entry is None:
            return
        members, xor = entry
        base = g * self.fec
        missing = []
        others = []
        for i in range(len(members)):
            p = self._have(base + i)
            if p is None:
                if base + i < self.next:
                    return      # written and forgotten: nothing to do
                missing.append(i)
            else:
                others.append(p)
        if len(missing) != 1:
            return
        i = missing[0]
        length, tag = members[i]
        try:
            payload = wire.recover(xor, others, length)
        except errors.ProtocolError:
            self.stats["rejected"] += 1
            return
        seq = base + i
        head = wire.HEADER.pack(wire.MAGIC, wire.VERSION, wire.DATA, self.session, seq)
        if not wire.tag_matches(self.tagger(head + payload), tag):
            self.stats["rejected"] += 1
            return
        self.stats["recovered"] += 1
        del self.parity[g]
        self._block(seq, payload, tag)

    def _nack(self, t):
        """Ask for the gaps: each at most once per NACK_RETRY.  Returns when
        the next gap is due to be asked again, or None."""
        end = self.top + 1
        quiet = t - self.last_data > QUIET
        if self.total is not None and quiet:
            # END comes by TCP and overtakes the last blocks still on the
            # way: the tail counts as lost only once the group is quiet.
            end = self.total
        elif not quiet and self.fec:
            # Leave the newest parity group a chance to repair itself.
            end = min(end, (self.top // self.fec) * self.fec)
        if end <= self.next:
            return None
        want = []
        due = None
        nacked = self.nacked
        pending = self.pending
        scan_end = min(end, self.next + 8192)
        for seq in range(self.next, scan_end):
            if seq in pending:
                continue
            last = nacked.get(seq)
            if last is None or t - last >= NACK_RETRY:
                if len(want) >= 512:
                    due = t + NACK_DELAY        # more than one line's worth
                    break
                want.append(seq)
                nacked[seq] = t
                last = t
            if due is None or last + NACK_RETRY < due:
                due = last + NACK_RETRY
        if scan_end < end and (due is None or t + NACK_RETRY < due):
            due = t + NACK_RETRY
        if want and self.debug:
            self.log(f"{t:.3f} NACK next={self.next} top={self.top} {wire.format_ranges(want)}")
        if want:
            self.stats["nacks"] += len(want)
            self._send(proto.format("NACK", wire.format_ranges(want)))
        return due

    # --- TCP relay ---------------------------------------------------------------

    def _frames(self, frames):
        """Blocks that came as TCP frames (already passed on down the chain)."""
        self.last_data = self.now()
        self.stats["frames"] += len(frames)
        for fr in frames:
            try:
                kind, sess, seq, body = wire.parse_datagram(self.tagger, fr, self.session)
            except errors.ProtocolError:
                self.stats["rejected"] += 1
                continue
            if kind == wire.DATA:
                self._block(seq, body, wire.datagram_tag(fr))

    # --- the end -------------------------------------------------------------------

    def _maybe_finish(self):
        if self.total is None or self.next < self.total or self.done:
            return
        self.sink.flush()
        got = self.sink.digest.hexdigest()
        if got != self.end_digest or self.sink.bytes != self.end_bytes:
            self._send(proto.format("FAILED", reason="digest"))
            self.ctl.flush()
            raise errors.DataError(
                f"stream digest {got} ({wire.count(self.sink.bytes, 'byte')}) does not match "
                f"the sender's {self.end_digest} ({wire.count(self.end_bytes, 'byte')})")
        self.sink.commit()
        self.done = True
        self._send(proto.format("DONE", size=self.sink.bytes, digest=got))
        self.timers.clear()
        self.loop.stop()        # run() waits for DONE to go, outside the loop


def receive(control, **kw):
    r = Receiver(control, **kw)
    return r.run()
