"""The worker's side of files that travel with jobs (gridmap -S
--transferfile, --return, --cleanup, --workdir, --basefile): a staged
job's workdir, the files written into it before it starts and read back
after it, and its cleanup; the basefiles offered on a connection, checked
by SHA-256 so one already in place is not sent again.  The fields were
checked by wire's grammar; what is left here is the filesystem."""

import hashlib
import os
import shutil

from gridtools.proto import wire


def where(wd, path):
    """path as the job sees it: relative paths are under the workdir."""
    return path if wd is None or os.path.isabs(path) else os.path.join(wd, path)


def remove(wd, paths):
    """--cleanup: each file, then every directory on its way that is empty
    now, the workdir and its parents included, as GNU parallel removes them
    (rmdir of each, deepest first; one not empty stays)."""
    for path in paths:
        full = where(wd, path)
        try:
            os.unlink(full)
        except OSError:
            pass
        parts = full.split("/")[:-1]
        while parts and parts != [""]:
            try:
                os.rmdir("/".join(parts))
            except OSError:
                pass
            parts.pop()


class Stage:
    """A job run with RUN stage=1: its STAGE (workdir, returns, how many
    files to wait for), the files written so far; error is a sentence
    when something could not be done (the job is then not run)."""

    __slots__ = ("wd", "wdrm", "cleanup", "returns", "expect", "ended", "open", "put",
                 "total", "error")

    def __init__(self):
        self.wd = None
        self.wdrm = False
        self.cleanup = False
        self.returns = []
        self.expect = None          # files to wait for: None until STAGE came
        self.ended = 0
        self.open = {}              # path -> [fd, bytes written]
        self.put = []               # paths written, for --cleanup
        self.total = 0
        self.error = None

    def ready(self):
        return self.expect is not None and self.ended >= self.expect

    def staged(self, msg):
        """STAGE id [wd=] [wdrm=1] [cleanup=1] files=N, the returns as its body."""
        if self.expect is not None:
            raise wire.WireError("STAGE: given twice", wire.E_USAGE)
        wd = msg.get("wd")
        self.wd = wire.file_path(wd, "STAGE: wd=") if wd is not None else None
        self.wdrm = msg.get("wdrm") == "1" and self.wd is not None
        self.cleanup = msg.get("cleanup") == "1"
        self.returns = wire.decode_paths(msg.body, "STAGE")
        self.expect = msg.int("files", 0, 0, wire.MAX_FILES)
        if self.wd is not None:
            try:
                os.makedirs(self.wd, exist_ok=True)
            except OSError as e:
                self.error = f"cannot make the workdir {self.wd}: {e.strerror}"

    def piece(self, msg):
        """FILE id path= [mode=] [off=] [end=1]: a piece of a file to write."""
        if self.expect is None:
            raise wire.WireError("FILE: before the job's STAGE", wire.E_USAGE)
        path, mode, off, end = wire.file_piece(msg)
        data = msg.body or b""
        entry = self.open.get(path)
        if entry is None:
            if off != 0 or path in self.put or len(self.put) >= wire.MAX_FILES:
                raise wire.WireError(f"FILE: {path[:200]!r} starts at off={off} or came twice",
                                     wire.E_USAGE, field="off")
            entry = self.open[path] = [None, 0]
            self.put.append(path)
            if self.error is None:
                target = where(self.wd, path)
                try:
                    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
                    entry[0] = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                                       | os.O_CLOEXEC, mode)
                except OSError as e:
                    self.error = f"cannot write {target}: {e.strerror}"
        if off != entry[1]:
            raise wire.WireError(f"FILE: {path[:200]!r} off={off}, expected {entry[1]}",
                                 wire.E_USAGE, field="off")
        self.total += len(data)
        if self.total > wire.MAX_JOB_BYTES:
            raise wire.WireError(f"FILE: more than {wire.MAX_JOB_BYTES} bytes for one job",
                                 wire.E_USAGE, field="bytes")
        entry[1] += len(data)
        fd = entry[0]
        if fd is not None and self.error is None:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            except OSError as e:
                self.error = f"cannot write {where(self.wd, path)}: {e.strerror}"
        if end:
            if fd is not None:
                os.close(fd)
            del self.open[path]
            self.ended += 1

    def pieces(self, chunk=wire.FILE_CHUNK):
        """What --return sends back: (path, mode, off, data, end) for each
        piece of each file, or (path, None, 0, sentence, True) for one that
        cannot be read."""
        for path in self.returns:
            target = where(self.wd, path)
            try:
                with open(target, "rb") as f:
                    mode = os.fstat(f.fileno()).st_mode & 0o777
                    off = 0
                    data = f.read(chunk)
                    while True:
                        nxt = f.read(chunk) if len(data) == chunk else b""
                        yield path, mode, off, data, not nxt
                        if not nxt:
                            break
                        off += len(data)
                        data = nxt
            except OSError as e:
                yield path, None, 0, f"--return {target}: {e.strerror}", True

    def clean(self):
        """The job is over: files still open are closed; with --cleanup the
        files sent and returned go; a workdir of its own (--workdir ...) goes
        whole."""
        for fd, _ in self.open.values():
            if fd is not None:
                os.close(fd)
        self.open.clear()
        if self.cleanup:
            remove(self.wd, self.put + self.returns)
        if self.wdrm:
            shutil.rmtree(self.wd, ignore_errors=True)


class Bases:
    """The basefiles offered on this connection: pending ones (WANTed, being
    written to a temporary name, hashed as they come) and those to remove
    when the connection ends (--cleanup)."""

    def __init__(self):
        self.pending = {}           # path -> [sha256, size, mode, fd, tmp, got, hasher]
        self.clean = []

    def offer(self, msg):
        """BASE with no body: True when the file is not here as offered
        (the caller says WANT)."""
        path = wire.file_path(msg.get("path"), "BASE: path=")
        sha = wire.sha256_field(msg)
        size = msg.int("size", None, 0, wire.MAX_BASE_BYTES)
        if size is None:
            raise wire.WireError("BASE: needs size=", wire.E_USAGE, field="size")
        mode = wire.file_mode(msg)
        if msg.get("cleanup") == "1" and path not in self.clean:
            self.clean.append(path)
        if path in self.pending or _same(path, size, sha):
            return False
        if len(self.pending) >= wire.MAX_BASES:
            raise wire.WireError(f"BASE: more than {wire.MAX_BASES} at once", wire.E_USAGE)
        self.pending[path] = [sha, size, mode, None, None, 0, hashlib.sha256()]
        return True

    def piece(self, msg):
        """BASE with a body: a piece of a file we WANTed.  Returns a sentence
        when it could not be put in place (it is then no longer pending)."""
        path, _, off, end = wire.file_piece(msg)
        entry = self.pending.get(path)
        if entry is None:
            raise wire.WireError(f"BASE: {path[:200]!r} was not wanted", wire.E_USAGE,
                                 field="path")
        sha, size, mode, fd, tmp, got, hasher = entry
        data = msg.body or b""
        if off != got or got + len(data) > size:
            self.pending.pop(path)
            _discard(fd, tmp)
            raise wire.WireError(f"BASE: {path[:200]!r} off={off}, expected {got}",
                                 wire.E_USAGE, field="off")
        try:
            if fd is None:
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
                tmp = f"{path}.gridtmp-{os.getpid()}"
                fd = entry[3] = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                                        | os.O_CLOEXEC, 0o600)
                entry[4] = tmp
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as e:
            self.pending.pop(path)
            _discard(fd, tmp)
            return f"--basefile {path}: {e.strerror}"
        hasher.update(data)
        entry[5] = got + len(data)
        if not end:
            return None
        self.pending.pop(path)
        if entry[5] != size or hasher.hexdigest() != sha:
            _discard(fd, tmp)
            return f"--basefile {path}: what arrived does not match its SHA-256"
        os.close(fd)
        try:
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except OSError as e:
            _discard(None, tmp)
            return f"--basefile {path}: {e.strerror}"
        return None

    def close(self):
        for entry in self.pending.values():
            _discard(entry[3], entry[4])
        self.pending.clear()
        remove(None, self.clean)


def _same(path, size, sha):
    """Is the file at path already this one?"""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size != size:
                return False
            h = hashlib.sha256()
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return False
    return h.hexdigest() == sha


def _discard(fd, tmp):
    if fd is not None:
        os.close(fd)
    if tmp is not None:
        try:
            os.unlink(tmp)
        except OSError:
            pass
