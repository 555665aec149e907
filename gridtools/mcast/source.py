"""What a gridmcast sender reads: a regular file (any block can be read again
with pread, for repairs and catch-up) or a stream of unknown length (blocks
kept in a bounded window in memory until every receiver is past them)."""

import os

from gridtools.proto import errors


class FileSource:
    """A regular file: size known, every block readable at any time."""

    def __init__(self, fd, size, payload):
        self.fd = fd
        self.size = size
        self.payload = payload
        self.eof = True
        self.base = 0

    @property
    def count(self):
        return -(-self.size // self.payload)

    @property
    def avail(self):
        return self.count

    def read_into(self, seq, mv):
        """Copy block `seq` into mv; return its length."""
        off = seq * self.payload
        n = min(self.payload, self.size - off)
        got = os.preadv(self.fd, [mv[:n]], off)
        if got != n:
            raise errors.GridError(f"the input file shrank while being sent (block {seq})",
                                   errors.IOERR)
        return n

    def has(self, seq):
        return 0 <= seq < self.count

    def wants_input(self):
        return False

    def release(self, below):
        pass


class StreamSource:
    """A pipe or terminal: blocks are read as needed and dropped once no
    receiver can ask for them again; at most `limit` bytes are held."""

    def __init__(self, fd, payload, limit):
        self.fd = fd
        self.payload = payload
        self.limit = limit
        self.blocks = {}
        self.base = 0          # lowest block still held
        self.avail = 0         # blocks read so far
        self.partial = bytearray()
        self.eof = False
        self.size = 0

    @property
    def count(self):
        return self.avail if self.eof else None

    def held(self):
        return (self.avail - self.base) * self.payload

    def wants_input(self):
        return not self.eof and self.held() < max(self.limit, self.payload * 4)

    def on_readable(self):
        """Read what the pipe has; complete blocks become available."""
        try:
            data = os.read(self.fd, max(self.payload, 1 << 16))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            raise errors.GridError(f"cannot read the input: {e.strerror}", errors.IOERR) from None
        if not data:
            self.eof = True
            if self.partial:
                self._add(bytes(self.partial))
                self.partial.clear()
            return
        self.partial += data
        p = self.payload
        while len(self.partial) >= p:
            self._add(bytes(self.partial[:p]))
            del self.partial[:p]

    def _add(self, block):
        self.blocks[self.avail] = block
        self.avail += 1
        self.size += len(block)

    def has(self, seq):
        return self.base <= seq < self.avail

    def read_into(self, seq, mv):
        block = self.blocks[seq]
        n = len(block)
        mv[:n] = block
        return n

    def release(self, below):
        while self.base < below and self.base < self.avail:
            del self.blocks[self.base]
            self.base += 1


def open_source(path, payload, limit):
    """A source for FILE or '-' (stdin); a regular file is read with pread."""
    if path in (None, "-"):
        fd = 0
    else:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise errors.NoInputError(f"cannot open {path}: {e.strerror}") from None
    st = os.fstat(fd)
    import stat
    if stat.S_ISREG(st.st_mode):
        return FileSource(fd, st.st_size, payload)
    os.set_blocking(fd, False)
    return StreamSource(fd, payload, limit)
