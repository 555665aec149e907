"""gridmap -S: files that travel with the jobs, as GNU parallel's
--transferfile/--tf, --transfer, --return, --cleanup, --trc, --basefile/--bf
and --workdir/--wd: the options, where each file goes (GNU's rules, "/./"
included), the messages that stage a job, and the returned files written
back here.  They go over the channel that carries the jobs (gridtools(7),
FILES); the worker's half is worker/files.py.
"""

import os

from gridtools.local import template
from gridtools.proto import errors

# hashlib, shutil, socket and proto.wire are imported where they are used:
# every gridmap run reads these options, few send files (16 ms of start-up).

OPTIONS = ("--transferfile", "--return", "--trc", "--basefile", "--workdir")
UNIQUE = "..."                  # --workdir ...: a directory of each job's own
TMP = ".gridtools/tmp"          # ... under the login dir, as GNU's ~/.parallel/tmp


def add_options(p):
    """The options, in gridmap's parser."""
    a = p.add_argument
    a("--transferfile", "--tf", metavar="FILE", action="append", default=[],
      help="-S: send FILE (a template, {} usually) to the job's host before it runs")
    a("--transfer", action="store_true", help="-S: the same as --transferfile {}")
    a("--return", metavar="FILE", action="append", default=[], dest="returns",
      help="-S: bring FILE (a template) back from the job's host after it ran (repeatable)")
    a("--cleanup", action="store_true",
      help="-S: remove the files sent and returned from the host after each job")
    a("--trc", metavar="FILE", action="append", default=[],
      help="-S: --transfer --return FILE --cleanup")
    a("--basefile", "--bf", metavar="FILE", action="append", default=[],
      help="-S: send FILE to each host once, before its first job (repeatable)")
    a("--workdir", "--wd", metavar="DIR",
      help="run the jobs in DIR, on the hosts with -S (. this directory, ... one of each "
           "job's own)")


def given(opts):
    """The transfer options given, by name (for the refusals)."""
    names = []
    if opts.transferfile or opts.transfer or opts.trc:
        names.append("--transferfile")
    if opts.returns:
        names.append("--return")
    if opts.basefile:
        names.append("--basefile")
    if opts.workdir is not None:
        names.append("--workdir")
    return names


class Plan:
    """What travels with each job, from the options: templates expanded per
    job as the command is."""

    def __init__(self, opts, env, cwd=None):
        import socket
        self.transfers = list(opts.transferfile)
        if opts.transfer or opts.trc:
            self.transfers.append("{}")
        self.returns = list(opts.returns) + list(opts.trc)
        self.cleanup = bool(opts.cleanup or opts.trc)
        self.workdir = opts.workdir
        if self.workdir == ".":
            self.workdir = relative_to_home(cwd or os.getcwd(), env.get("HOME"))
        self.host = socket.gethostname().split(".")[0] or "localhost"
        self.bases = []
        for name in opts.basefile:
            local, remote = split_dot(name)
            if not os.path.isabs(remote) and self.workdir == UNIQUE:
                raise errors.UsageError(f"--basefile {name}: --workdir ... does not work with "
                                        f"a relative basefile (as in GNU parallel)")
            if self.workdir not in (None, UNIQUE) and not os.path.isabs(remote):
                remote = f"{self.workdir}/{remote}"
            self.bases.append((local, _checked(remote, "--basefile")))

    def base_messages(self):
        """BASE pieces of every basefile, sent once before the first job."""
        import hashlib
        from gridtools.proto import wire
        for local, remote in self.bases:
            try:
                with open(local, "rb") as f:
                    st = os.fstat(f.fileno())
                    if st.st_size > wire.MAX_BASE_BYTES:
                        raise errors.UsageError(f"--basefile {local}: over "
                                                f"{wire.MAX_BASE_BYTES} bytes")
                    h = hashlib.sha256()
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                    f.seek(0)
                    head = dict(path=remote, sha256=h.hexdigest(), size=st.st_size,
                                mode=f"{st.st_mode & 0o777:o}", cleanup=self.cleanup or None)
                    off = 0
                    while True:
                        data = f.read(wire.FILE_CHUNK)
                        end = off + len(data) >= st.st_size
                        yield wire.format("BASE", off=off, end=end, body=data, **head)
                        off += len(data)
                        if end:
                            break
            except OSError as e:
                raise errors.NoInputError(f"--basefile {local}: {e.strerror}") from None

    def stage(self, job, warn):
        """(messages after job's RUN stage=1, {remote path: local path} of
        its returns).  A path that leaves the workdir is a DataError."""
        from gridtools.proto import wire
        expand = lambda text: template.expand_plain(text, job.args, job.seq, job.slot)  # noqa: E731
        wd = self.workdir
        rm = False
        if wd == UNIQUE:
            wd, rm = f"{TMP}/{self.host}-{os.getpid()}-{job.seq}", True
        elif wd is not None:
            wd = _checked(expand(wd), "--workdir")
        returns = {}
        for text in self.returns:
            local, remote = split_dot(expand(text))
            returns[_checked(remote, "--return")] = local
        if len(returns) > wire.MAX_FILES or len(self.transfers) > wire.MAX_FILES:
            raise errors.DataError(f"a job sends and asks back at most {wire.MAX_FILES} files")
        pieces = []
        total = 0
        for text in self.transfers:
            local, remote = split_dot(expand(text))
            remote = _checked(remote, "--transferfile")
            try:
                f = open(local, "rb")
                total += os.fstat(f.fileno()).st_size
            except OSError as e:
                warn(f"--transferfile {local}: {e.strerror}")
                continue
            pieces.append((f, remote))
            if total > wire.MAX_JOB_BYTES:
                for f, _ in pieces:
                    f.close()
                raise errors.DataError(f"--transferfile: more than {wire.MAX_JOB_BYTES} bytes "
                                       f"for job {job.seq}")
        cid = str(job.seq)
        msgs = [wire.format("STAGE", cid, wd=wd, wdrm=rm or None,
                            cleanup=self.cleanup or None, files=len(pieces),
                            body=wire.encode_argv(list(returns)) if returns else None)]
        for f, remote in pieces:
            with f:
                mode = f"{os.fstat(f.fileno()).st_mode & 0o777:o}"
                off = 0
                data = f.read(wire.FILE_CHUNK)
                while True:
                    nxt = f.read(wire.FILE_CHUNK) if len(data) == wire.FILE_CHUNK else b""
                    msgs.append(wire.format("FILE", cid, path=remote, mode=mode, off=off,
                                            end=not nxt or None, body=data))
                    if not nxt:
                        break
                    off += len(data)
                    data = nxt
        return msgs, returns


def split_dot(path):
    """GNU parallel's "/./" rule: (the path here, the path on the host); on
    the host the part after "/./" is relative to the workdir."""
    head, sep, tail = path.partition("/./")
    if not sep:
        return path, path
    return f"{head}/{tail}", tail


def relative_to_home(cwd, home):
    """--workdir .: this directory, relative to the home directory when it
    is under it (a host where home is elsewhere gets the same place)."""
    if home:
        home = os.path.realpath(home)
        real = os.path.realpath(cwd)
        if real == home:
            return "."
        if real.startswith(home.rstrip("/") + "/"):
            return os.path.relpath(real, home)
    return cwd


def _checked(path, option):
    from gridtools.proto import wire
    try:
        return wire.file_path(path, option)
    except wire.WireError as e:
        raise errors.DataError(str(e)) from None


class Returns:
    """The files jobs send back (FILE id path= off= [end=1]), written here
    where --return said; a path no job asked for is the hub's error."""

    def __init__(self):
        self.wanted = {}            # cid -> {remote path: local path}
        self.open = {}              # (cid, path) -> [fd, bytes written]

    def expect(self, cid, returns):
        if returns:
            self.wanted[cid] = returns

    def piece(self, cid, msg):
        from gridtools.proto import wire
        path, mode, off, end = wire.file_piece(msg)
        local = self.wanted.get(cid, {}).get(path)
        if local is None:
            raise errors.ProtocolError(f"the hub sent file {path[:200]!r} for job {cid}, "
                                       f"which no --return asked for")
        key = (cid, path)
        entry = self.open.get(key)
        if entry is None:
            if off != 0:
                raise errors.ProtocolError(f"file {path[:200]!r} of job {cid} began at {off}")
            try:
                d = os.path.dirname(local)
                if d:
                    os.makedirs(d, exist_ok=True)
                fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
            except OSError as e:
                raise errors.GridError(f"--return: cannot write {local}: {e.strerror}",
                                       errors.CANTCREAT) from None
            entry = self.open[key] = [fd, 0]
        if off != entry[1]:
            raise errors.ProtocolError(f"file {path[:200]!r} of job {cid}: piece at {off}, "
                                       f"expected {entry[1]}")
        view = memoryview(msg.body or b"")
        entry[1] += len(view)
        while view:
            view = view[os.write(entry[0], view):]
        if end:
            os.close(entry[0])
            del self.open[key]

    def done(self, cid):
        """The job ended: a file it did not finish sending is closed as it is."""
        for path in self.wanted.pop(cid, {}):
            entry = self.open.pop((cid, path), None)
            if entry is not None:
                os.close(entry[0])


def plan_for(opts, env, remote, hub):
    """The Plan for this run, or None.  With -S (remote) the options take
    effect; on the local pool GNU parallel ignores all but --workdir, and
    so does gridmap (see LocalWorkdir); with --hub they are refused: a
    hub's workers are not sent files yet."""
    names = given(opts)
    if not names:
        return None
    if hub:
        raise errors.UsageError(f"{names[0]} works with -S only, not with --hub")
    return Plan(opts, env) if remote else None


class LocalWorkdir:
    """--workdir on the local pool, as GNU parallel does it: each job runs
    in the directory (a template; made when missing); "." and "..." are
    under the home directory, "..." one of each job's own, removed with
    what is in it when the job ends."""

    def __init__(self, text, env):
        import socket
        self.text = text
        self.home = env.get("HOME") or os.path.expanduser("~")
        self.host = socket.gethostname().split(".")[0] or "localhost"

    def where(self, job):
        if self.text == UNIQUE:
            return os.path.join(self.home, TMP, f"{self.host}-{os.getpid()}-{job.seq}")
        if self.text == ".":
            return None             # this directory, wherever home is
        return template.expand_plain(self.text, job.args, job.seq, job.slot)

    def enter(self, job):
        d = self.where(job)
        if d is not None:
            os.makedirs(d, exist_ok=True)
        return d

    def leave(self, job):
        import shutil
        if self.text == UNIQUE:
            shutil.rmtree(self.where(job), ignore_errors=True)


def local_workdir(opts, env):
    """A LocalWorkdir for --workdir on the local pool, or None."""
    return LocalWorkdir(opts.workdir, env) if opts.workdir is not None else None
