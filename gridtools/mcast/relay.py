"""A gridmcast receiver's TCP relay: frames arrive on its relay port (from
the sender, or the receiver before it in a chain) and are passed on to the
next receiver before they are kept; a slow next receiver slows our reading,
never grows our memory."""

import socket

from gridtools.proto import address, errors
from gridtools.mcast import control
from gridtools.mcast import wire

RELAY_HIGH = 8 << 20      # downstream bytes queued before we stop reading upstream
RELAY_BUFFER = 8 << 20    # receive buffer per upstream connection
RELAY_FRAME_MAX = wire.MAX_PAYLOAD + 4096 + 4   # room always left for one whole frame


class Relay:
    """The relay port and the chain's next link, on the loop.  on_frames
    gets each batch of whole frames (memoryviews, valid during the call)."""

    def __init__(self, loop, listener, log, on_frames):
        self.loop = loop
        self.listener = listener
        self.address = address.join(*listener.getsockname()[:2])
        self.log = log
        self.on_frames = on_frames
        self.upstreams = []
        self.downstream = None
        self.throttled = False

    def start(self, forward):
        """The session began: take frames, and pass them on to `forward`."""
        if forward:
            self._forward_to(forward)
        self.loop.add_reader(self.listener.fileno(), self._on_accept)

    def _on_accept(self):
        try:
            sock, addr = self.listener.accept()
        except OSError:
            return
        conn = control.Conn(self.loop, sock, address.join(*addr[:2]))
        conn.rbuf = bytearray(RELAY_BUFFER)
        conn.rmv = memoryview(conn.rbuf)
        conn.start = conn.fill = 0
        self.upstreams.append(conn)
        if not self.throttled:
            self.loop.add_reader(conn.fd, self._on_upstream, conn)

    def _forward_to(self, where):
        """Connect to the next receiver in the chain, without waiting: what
        comes before the connection is up waits in its output buffer."""
        try:
            sock = control.connect_nowait(where, "forward address", sndbuf=1 << 20)
        except OSError as e:
            self.log(f"cannot reach the next receiver {where}: {e.strerror}")
            return
        down = self.downstream = control.Conn(self.loop, sock, where)
        down.connecting = True
        self.loop.add_writer(down.fd, self._on_downstream_writable)

    def _on_upstream(self, conn):
        buf, mv = conn.rbuf, conn.rmv
        try:
            n = conn.sock.recv_into(mv[conn.fill:])
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            n = 0
        if n == 0:
            conn.eof = True
        conn.fill += n
        view = mv[conn.start:conn.fill]
        try:
            frames, used = wire.split_frames(view)
        except errors.ProtocolError as e:
            self.log(f"dropping upstream {conn.name}: {e}")
            frames, used = [], 0
            conn.eof = True
        down = self.downstream
        if down is not None and used:
            # Forward first: the next receiver should not wait for our disk.
            self._forward(down, view[:used])
        try:
            if frames:
                self.on_frames(frames)
        finally:
            for fr in frames:
                fr.release()
            del frames
            view.release()
        conn.start += used
        if conn.start == conn.fill:
            conn.start = conn.fill = 0
        elif len(buf) - conn.fill < RELAY_FRAME_MAX:
            rest = bytes(mv[conn.start:conn.fill])
            buf[:len(rest)] = rest
            conn.start, conn.fill = 0, len(rest)
        if conn.eof:
            conn.close()
            self.upstreams.remove(conn)

    def _lost_downstream(self, why=None):
        down = self.downstream
        self.log(f"the next receiver {down.name} {why or 'went away'}")
        self.downstream = None
        down.close()
        self._throttle(False)

    def _forward(self, down, data):
        if down.connecting:
            down.out += data
            if len(down.out) > RELAY_HIGH:
                self._throttle(True)
            return
        if not down.out:
            try:
                n = down.sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self._lost_downstream()
                return
            data = data[n:]
        if len(data):
            down.out += data
            if not down.flush():
                self._lost_downstream()
            elif len(down.out) > RELAY_HIGH:
                self._throttle(True)
            elif down.out:
                self.loop.add_writer(down.fd, self._on_downstream_writable)

    def _throttle(self, on):
        if on == self.throttled:
            return
        self.throttled = on
        for c in self.upstreams:
            if on:
                self.loop.remove_reader(c.fd)
            else:
                self.loop.add_reader(c.fd, self._on_upstream, c)
        down = self.downstream
        if on and down:
            self.loop.add_writer(down.fd, self._on_downstream_writable)

    def _on_downstream_writable(self):
        down = self.downstream
        if down is None:
            return
        if down.connecting:
            err = control.connect_error(down.sock)
            if err is not None:
                self._lost_downstream(f"cannot be reached: {err.strerror}")
                return
            down.connecting = False
        if not down.flush():
            self._lost_downstream()
            return
        if not down.out:
            self.loop.remove_writer(down.fd)
        if len(down.out) < RELAY_HIGH // 2:
            self._throttle(False)

    def drain(self, timeout):
        """After the loop: pass on what is queued, then end the chain's
        stream so the next receiver sees its end."""
        down = self.downstream
        if down is None:
            return
        down.sock.settimeout(timeout)
        try:
            if down.out:
                down.sock.sendall(down.out)
            down.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        down.close()
