"""Where a gridmcast receiver puts the stream: in order, buffered, with the
running stream digest; a file is written under a temporary name and renamed
only after the final check, so a partial or corrupt copy never appears."""

import hashlib
import os
import sys
import tempfile

from gridtools.proto import errors

FLUSH_AT = 1 << 20
DIRECT = 32 << 10


class Sink:
    def __init__(self, path):
        self.path = path
        self.tmp = None
        if path in (None, "-"):
            self.fd = sys.stdout.fileno()
        else:
            d = os.path.dirname(os.path.abspath(path))
            try:
                self.fd, self.tmp = tempfile.mkstemp(
                    prefix="." + os.path.basename(path) + ".", suffix=".part", dir=d)
            except OSError as e:
                raise errors.GridError(f"cannot create a file in {d}: {e.strerror}",
                                       errors.CANTCREAT) from None
        self.buf = bytearray()
        self.digest = hashlib.sha256()
        self.bytes = 0

    def put(self, payload, tag):
        """Append the next block (already verified) and fold its tag in."""
        self.digest.update(tag)
        self.bytes += len(payload)
        if len(payload) >= DIRECT:
            # A big block goes straight from the receive buffer to the file.
            if self.buf:
                self.flush()
            self._write(payload)
            return
        self.buf += payload
        if len(self.buf) >= FLUSH_AT:
            self.flush()

    def flush(self):
        self._write(self.buf)
        self.buf.clear()

    def _write(self, data):
        mv = memoryview(data)
        pos = 0
        try:
            while pos < len(mv):
                pos += os.write(self.fd, mv[pos:])
        except BrokenPipeError:
            raise
        except OSError as e:
            raise errors.GridError(f"cannot write the output: {e.strerror}", errors.IOERR) from None
        finally:
            mv.release()

    def commit(self):
        """Flush, and give a file its final name (the check has passed)."""
        self.flush()
        if self.tmp:
            os.fchmod(self.fd, 0o666 & ~_umask())
            os.close(self.fd)
            os.replace(self.tmp, self.path)
            self.tmp = None

    def discard(self):
        """Drop a file that failed: nothing appears under the final name."""
        if self.tmp:
            try:
                os.close(self.fd)
            except OSError:
                pass
            try:
                os.unlink(self.tmp)
            except OSError:
                pass
            self.tmp = None


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
