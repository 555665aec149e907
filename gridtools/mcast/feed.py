"""A TCP relay feed: the sender's stream of frames to one receiver's relay
port (the head of a chain, a chain's survivor, or an evicted receiver),
connected and written without blocking the loop."""

import socket

from gridtools.mcast import control
from gridtools.mcast import wire

FEED_SNDBUF = 2 << 20


class Feed:
    """Frames from block `pos` on, as fast as the receiver takes them.
    on_event(feed, error) tells the sender when the feed ends (error None:
    the whole stream went) or fails, and after each write, so it can look
    at the stream's end."""

    def __init__(self, loop, blocks, member, pos, payload, on_event):
        self.loop = loop
        self.blocks = blocks
        self.member = member
        self.pos = pos
        self.on_event = on_event
        self.sock = control.connect_nowait(member.relay, "relay address", FEED_SNDBUF)
        self.fd = self.sock.fileno()
        self.connected = False
        self.buf = bytearray(4 + wire.OVERHEAD + payload)
        self.mv = memoryview(self.buf)
        self.cur = None
        self.closed = False
        self.paused = False
        loop.add_writer(self.fd, self.on_writable)

    def on_writable(self):
        if not self.connected:
            err = control.connect_error(self.sock)
            if err is not None:
                self.close()
                self.on_event(self, f"cannot connect to its relay port {self.member.relay}: "
                                    f"{err.strerror}")
                return
            self.connected = True
        src = self.blocks.source
        for _ in range(64):
            if self.cur is None:
                if not src.has(self.pos):
                    if src.count is not None and self.pos >= src.count:
                        self.finish()
                    else:
                        self.loop.remove_writer(self.fd)     # wait for input
                        self.paused = True
                    break
                self.cur = self.blocks.build(self.pos, self.mv, 4)
            try:
                n = self.sock.send(self.cur)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.close()
                break
            if n == len(self.cur):
                self.cur = None
                self.pos += 1
            else:
                self.cur = self.cur[n:]
        self.on_event(self, None)

    def resume(self):
        """Input arrived: carry on."""
        if self.paused and not self.closed:
            self.paused = False
            self.loop.add_writer(self.fd, self.on_writable)

    def finish(self):
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.close()

    def close(self):
        if not self.closed:
            self.closed = True
            self.loop.remove_writer(self.fd)
            self.sock.close()
