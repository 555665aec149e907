"""--compress, --compress-program, --decompress-program: the temporary
files that hold jobs' output (a stream beyond Capture.LIMIT, results -k
spills) are written through an external compressor and read back through
its decompressor, as GNU parallel compresses its temporary files.

The compressor of a stream runs beside its job, reading a pipe and writing
the unlinked temporary file.  Our writes to it block while it is busy, as
a write to a disk does: it is a local program that always reads on.
"""

import os
import shlex
import shutil
import tempfile

from gridtools.local import inputs
from gridtools.proto import errors
from gridtools.run import runner

# GNU parallel 20221122's order (find_compression_program), its options.
ORDER = ("pzstd lbzip2 pbzip2 zstd pixz lz4 pigz lzop plzip lzip gzip "
         "lrz pxz bzip2 lzma xz clzip").split()
CHUNK = 1 << 20


def choose(program=None, decompress=None, which=shutil.which):
    """The Packer for --compress (program None) or --compress-program
    PROGRAM and --decompress-program, as GNU parallel picks them: the first
    of ORDER on PATH, run as 'P -c -1' and 'P -dc', else cat; PROGRAM alone
    decompresses with 'PROGRAM -dc'.  A program not on PATH is refused."""
    if program is None:
        found = next((p for p in ORDER if which(p)), None)
        program, unpack = (f"{found} -c -1", f"{found} -dc") if found else ("cat", "cat")
    else:
        unpack = program + " -dc"
    unpack = decompress or unpack
    for name, command in (("--compress-program", program),
                          ("--decompress-program", unpack)):
        try:
            words = shlex.split(command)
        except ValueError as e:
            raise errors.UsageError(f"{name}: {e}: {command!r}")
        if not words:
            raise errors.UsageError(f"{name}: empty")
        if which(words[0]) is None:
            raise errors.GridError(f"{name}: {words[0]}: command not found",
                                   errors.UNAVAILABLE)
    return Packer(program, unpack)


def _argv(command):
    return runner.split_plain(command) or runner.shell_argv(command)


def _check(child, command, name):
    code, sig = child.reap()
    if code != 0:
        why = f"signal {sig}" if sig is not None else f"exit {code}"
        raise errors.GridError(f"{name} {command!r} failed ({why})", errors.IOERR)


class Packer:
    """The two commands, and where their files go."""

    def __init__(self, compress, decompress):
        self.compress = compress
        self.decompress = decompress
        self.tmpdir = None          # --tmpdir; None: $TMPDIR or /tmp

    def open(self):
        return Packed(self)

    def unpack(self, fd):
        """The decompressed bytes of the file open at fd (from where it
        stands to its end), in pieces."""
        child = runner.spawn(_argv(self.decompress), stdin=fd, stdout=runner.PIPE, stderr=2)
        try:
            os.set_blocking(child.stdout, True)
            while True:
                chunk = os.read(child.stdout, CHUNK)
                if not chunk:
                    break
                yield chunk
        except BaseException:
            child.kill(9)
            os.close(child.stdout)
            child.stdout = None
            child.reap()
            raise
        os.close(child.stdout)
        child.stdout = None
        _check(child, self.decompress, "--decompress-program")

    def slice(self, file, offset, packed, size):
        return PackedSlice(self, file, offset, packed, size)


class Packed:
    """One stream's temporary file, written through the compressor."""

    def __init__(self, packer):
        self.packer = packer
        self.file = tempfile.TemporaryFile(prefix="gridmap-out-", dir=packer.tmpdir)
        try:
            self.child = runner.spawn(_argv(packer.compress), stdin=runner.PIPE,
                                      stdout=self.file.fileno(), stderr=2)
        except OSError as e:
            self.file.close()
            raise errors.GridError(f"--compress-program {packer.compress!r}: {e.strerror}",
                                   errors.UNAVAILABLE)
        os.set_blocking(self.child.stdin, True)

    def write(self, data):
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.child.stdin, view):]
        except BrokenPipeError:
            self.child.close_stdin()
            _check(self.child, self.packer.compress, "--compress-program")
            raise errors.GridError(f"--compress-program {self.packer.compress!r} "
                                   f"stopped reading", errors.IOERR)

    def writelines(self, parts):
        for part in parts:
            self.write(part)

    def finish(self):
        """All written: the compressor's end awaited; the file's size."""
        if self.child is not None:
            child, self.child = self.child, None
            child.close_stdin()
            _check(child, self.packer.compress, "--compress-program")
        return os.fstat(self.file.fileno()).st_size

    def chunks(self, size=CHUNK):
        self.finish()
        self.file.seek(0)
        return self.packer.unpack(self.file.fileno())

    def raw(self, size=CHUNK):
        """The compressed bytes as they lie in the file."""
        self.finish()
        self.file.seek(0)
        yield from inputs.read_chunks(self.file.fileno(), size)

    def close(self):
        if self.child is not None:
            self.child.close_stdin()
            self.child.kill(9)
            self.child.reap()
            self.child = None
        self.file.close()


class PackedSlice:
    """A held result's compressed output in the -k spill file: copied out
    to a temporary file of its own when wanted, and decompressed from it."""

    __slots__ = ("packer", "file", "offset", "packed", "size")

    def __init__(self, packer, file, offset, packed, size):
        self.packer = packer
        self.file = file
        self.offset = offset
        self.packed = packed        # bytes in the spill file
        self.size = size            # bytes once decompressed

    def __len__(self):
        return self.size

    def chunks(self, size=CHUNK):
        with tempfile.TemporaryFile(prefix="gridmap-out-", dir=self.packer.tmpdir) as tmp:
            pos, end = self.offset, self.offset + self.packed
            while pos < end:
                self.file.seek(pos)
                chunk = self.file.read(min(size, end - pos))
                if not chunk:
                    break
                pos += len(chunk)
                tmp.write(chunk)
            tmp.flush()
            tmp.seek(0)
            yield from self.packer.unpack(tmp.fileno())
