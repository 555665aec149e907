"""gridmap -S with files that travel with the jobs (--transferfile, --return,
--cleanup, --trc, --basefile, --workdir) over the one ssh channel per host,
on the real sshd of tests/sshfixtures.py; GNU parallel's path rules and the
grammar's refusals in process."""

import os
import subprocess

import pytest

from hubfixtures import clean_env, tool
from sshfixtures import sshd  # noqa: F401 (a fixture)
from gridtools.local import transfer
from gridtools.proto import errors, wire


def gridmap(*args, input=b"", cwd=None, timeout=120):
    return subprocess.run([*tool("gridmap"), *args], input=input, capture_output=True,
                          env=clean_env(), cwd=cwd, timeout=timeout)


def ssh_args(sshd):
    return ["--ssh", f"ssh -F {sshd.config}"]


def files_under(d):
    return sorted(os.path.relpath(os.path.join(r, f), d)
                  for r, _, fs in os.walk(d) for f in fs)


# -- GNU parallel's rules, in process --------------------------------------------

@pytest.mark.parametrize("path, here, there", [
    ("tmp/foo/bar", "tmp/foo/bar", "tmp/foo/bar"),
    ("/tmp/foo/bar", "/tmp/foo/bar", "/tmp/foo/bar"),
    ("/tmp/./foo/bar", "/tmp/foo/bar", "foo/bar"),
    ("tmp/./foo/bar", "tmp/foo/bar", "foo/bar"),
    ("out/./in/file.out", "out/in/file.out", "in/file.out"),
])
def test_the_slash_dot_slash_rule(path, here, there):
    assert transfer.split_dot(path) == (here, there)


def test_workdir_dot_is_relative_to_home_when_under_it(tmp_path):
    home = tmp_path / "home"
    (home / "a" / "b").mkdir(parents=True)
    assert transfer.relative_to_home(str(home / "a" / "b"), str(home)) == "a/b"
    assert transfer.relative_to_home(str(home), str(home)) == "."
    assert transfer.relative_to_home("/usr/lib", str(home)) == "/usr/lib"


@pytest.mark.parametrize("bad", ["../x", "a/../../x", "..", "", "a\0b", "x" * 1025])
def test_a_path_that_leaves_the_workdir_is_refused_by_the_grammar(bad):
    with pytest.raises(wire.WireError) as e:
        wire.file_path(bad)
    assert e.value.code == wire.E_USAGE


def test_pieces_and_modes_are_checked():
    msg = wire.Message("FILE", ["1"], {"path": "a", "mode": "9"}, b"x")
    with pytest.raises(wire.WireError, match="octal"):
        wire.file_piece(msg)
    msg = wire.Message("FILE", ["1"], {"path": "a", "off": "²"}, b"x")
    with pytest.raises(wire.WireError):
        wire.file_piece(msg)
    msg = wire.Message("FILE", ["1"], {"path": "d/a", "mode": "755", "off": "3", "end": "1"},
                       b"x")
    assert wire.file_piece(msg) == ("d/a", 0o755, 3, True)
    for verb in ("STAGE", "FILE", "BASE", "WANT"):
        m = wire.format(verb, "1", path="a b/%c", sha256="0" * 64, body=b"\0x")
        got, end = wire.split(m)
        assert end == len(m) and got.get("path") == "a b/%c" and got.body == b"\0x"


@pytest.mark.parametrize("args, words", [
    (["--hub", "127.0.0.1:1", "--tf", "{}"], b"--transferfile works with -S only"),
    (["--hub", "127.0.0.1:1", "--return", "x"], b"--return works with -S only"),
])
def test_what_is_not_built_is_refused_with_64(args, words):
    r = gridmap(*args, "echo", input=b"x\n")
    assert r.returncode == errors.USAGE, r.stderr
    assert words in r.stderr and r.stderr.count(b"\n") <= 3


def test_workdir_on_a_local_run_as_gnu_parallel(tmp_path):
    """GNU parallel honours --workdir locally: made, entered; ... is each
    job's own under the home directory, removed when the job ends."""
    home = tmp_path / "home"
    home.mkdir()
    env = clean_env(HOME=str(home))
    r = subprocess.run([*tool("gridmap"), "-k", "--wd", "w/{}", ": {}; pwd; echo hi > f"],
                       input=b"a\nb\n", capture_output=True, env=env, cwd=tmp_path,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split() == [str(tmp_path / "w" / "a"), str(tmp_path / "w" / "b")]
    assert (tmp_path / "w" / "b" / "f").read_text() == "hi\n"
    r = subprocess.run([*tool("gridmap"), "-k", "--wd", "...", "pwd; touch x; echo {}"],
                       input=b"a\nb\n", capture_output=True, env=env, cwd=tmp_path,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode().split()
    assert out[1::2] == ["a", "b"] and len(set(out[0::2])) == 2
    assert all(d.startswith(str(home / ".gridtools" / "tmp") + "/") for d in out[0::2])
    assert os.listdir(home / ".gridtools" / "tmp") == []


def test_a_local_run_ignores_them_as_gnu_parallel_does(tmp_path):
    (tmp_path / "f").write_text("hi\n")
    r = gridmap("--trc", "{}.out", "--bf", "f", "-S", ":", "cat", input=b"f\n", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == b"hi\n", r.stderr
    assert not (tmp_path / "f.out").exists()


# -- on the real sshd ------------------------------------------------------------

def make_inputs(d, n=12):
    names = []
    for i in range(n):
        p = d / "in" / f"sub{i % 3}" / f"f{i}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(i * 50000) + b"\n")
        names.append(os.path.relpath(p, d))
    return names


def test_transfer_return_cleanup_round_trip(sshd, tmp_path):
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    names = make_inputs(here)
    cmd = "test ! -e {}.sum && sha256sum {} > {}.sum && wc -c < {}"
    remote = gridmap(*ssh_args(sshd), "-S", "2/gridtest", "-k", "--wd", str(there),
                     "--trc", "{}.sum", cmd, input="".join(n + "\n" for n in names).encode(),
                     cwd=here)
    assert remote.returncode == 0, remote.stderr
    for n in names:
        want = subprocess.run(["sha256sum", n], cwd=here, capture_output=True).stdout
        assert (here / f"{n}.sum").read_bytes() == want
    # --cleanup: nothing left on the host, not even the directories made
    # (the workdir too, once empty, as GNU parallel's rmdir of each).
    assert not there.exists()
    # Output identical to a local run of the same command.
    for n in names:
        os.unlink(here / f"{n}.sum")
    local = gridmap("-k", cmd, input="".join(n + "\n" for n in names).encode(), cwd=here)
    assert local.returncode == 0 and remote.stdout == local.stdout


def test_without_cleanup_files_stay_and_absolute_paths_keep_their_place(sshd, tmp_path):
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    src = here / "data.txt"
    src.write_text("abc\n")
    out = tmp_path / "abs" / "out.txt"
    r = gridmap(*ssh_args(sshd), "-S", "gridtest", "--wd", str(there), "--tf", "{}",
                "--return", str(out), f"mkdir -p {out.parent}; tr a-z A-Z < {{}} > {out}",
                input=b"data.txt\n", cwd=here)
    assert r.returncode == 0, r.stderr
    assert (there / "data.txt").read_text() == "abc\n"
    assert out.read_text() == "ABC\n"


def test_a_basefile_goes_once_per_host_and_not_again_when_there(sshd, tmp_path):
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    (here / "base.dat").write_bytes(os.urandom(300000))
    cmd = ": {}; stat -c %i base.dat; sha256sum < base.dat"
    args = (*ssh_args(sshd), "-S", "2/gridtest", "--wd", str(there), "--bf", "base.dat", cmd)
    first = gridmap(*args, input=b"".join(b"%d\n" % i for i in range(10)), cwd=here)
    assert first.returncode == 0, first.stderr
    want = subprocess.run(["sha256sum"], input=(here / "base.dat").read_bytes(),
                          capture_output=True).stdout
    inodes = set(first.stdout.splitlines()[0::2])
    # One file for every job: written once (a rewrite is a new inode).
    assert len(inodes) == 1 and set(first.stdout.splitlines()[1::2]) == {want.strip()}
    again = gridmap(*args, input=b"1\n", cwd=here)
    assert again.stdout.splitlines()[0] in inodes     # identical: not sent again
    (here / "base.dat").write_bytes(b"new\n")
    changed = gridmap(*args, input=b"1\n", cwd=here)
    assert changed.stdout.splitlines()[1] == subprocess.run(
        ["sha256sum"], input=b"new\n", capture_output=True).stdout.strip()
    # --cleanup removes it when the run ends.
    gridmap(*args[:-1], "--cleanup", cmd, input=b"1\n", cwd=here)
    assert not (there / "base.dat").exists()


def test_workdir_dots_is_each_jobs_own_and_removed(sshd, tmp_path):
    r = gridmap(*ssh_args(sshd), "-S", "2/gridtest", "--wd", "...", "-k",
                "pwd; echo {} > mine; cat mine", input=b"a\nb\nc\n")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode().split("\n")
    dirs = out[0:6:2]
    assert out[1:6:2] == ["a", "b", "c"]
    assert len(set(dirs)) == 3 and all("/.gridtools/tmp/" in d for d in dirs)
    assert not any(os.path.exists(d) for d in dirs)


@pytest.mark.parametrize("opt", ["--tf", "--return"])
def test_an_escaping_path_is_refused_in_one_line(sshd, tmp_path, opt):
    (tmp_path / "fine").write_text("ok\n")
    r = gridmap(*ssh_args(sshd), "-S", "gridtest", "--wd", str(tmp_path), opt, "{}", "true",
                input=b"../escape\nfine\n", cwd=tmp_path)
    assert r.returncode == 1        # that job failed, unrun; the next one ran
    assert b"leaves the workdir" in r.stderr and r.stderr.count(b"\n") == 1, r.stderr
    assert not (tmp_path.parent / "escape").exists()


# -- a worker told hostile things: gridd worker --stdio, spoken to as a hub ------

class StdioWorker:
    """A real gridd worker on pipes; this test is its hub."""

    def __init__(self, cwd):
        self.proc = subprocess.Popen([*tool("gridd"), "worker", "--stdio", "--slots", "4",
                                      "--name", "w"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     cwd=cwd, env=clean_env())
        self.reader = wire.Reader()
        hello = self.next()
        assert hello.verb == "HELLO"
        self.send(wire.hello("hub", wire.new_nonce()))
        assert self.next().verb == "WELCOME" and self.next().verb == "READY"

    def send(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def next(self):
        while True:
            msg = self.reader.next()
            if msg is not None:
                return msg
            data = os.read(self.proc.stdout.fileno(), 65536)
            assert data, "the worker went away"
            self.reader.feed(data)

    def until_done(self, wid):
        """Every message up to job wid's DONE, which must come once."""
        got = []
        while True:
            msg = self.next()
            got.append(msg)
            if msg.verb == "DONE" and msg.args[0] == wid:
                return got

    def close(self):
        self.proc.stdin.close()
        assert self.proc.wait(30) == 0


def staged_run(wid, cmd):
    return wire.format("RUN", wid, stage=1, body=cmd.encode())


def test_a_worker_refuses_hostile_staging_and_ends_each_job_once(tmp_path):
    w = StdioWorker(tmp_path)
    try:
        # A path with "..", sent straight to the worker: ERR naming the
        # field, the job ends unrun (exit 1) and nothing is written.
        w.send(staged_run("1", "touch ran1"))
        w.send(wire.format("STAGE", "1", files=1))
        w.send(wire.format("FILE", "1", path="../evil", end=1, body=b"x"))
        got = w.until_done("1")
        assert [m.verb for m in got].count("DONE") == 1
        assert any(m.verb == "ERR" and m.get("field") == "path" for m in got)
        assert got[-1].get("exit") == "1" and not (tmp_path / "ran1").exists()
        assert not (tmp_path.parent / "evil").exists()
        # A workdir that leaves, pieces out of order, a FILE before STAGE.
        for wid, msgs in (("2", [wire.format("STAGE", "2", wd="a/../..", files=0)]),
                          ("3", [wire.format("STAGE", "3", files=1),
                                 wire.format("FILE", "3", path="f", off=5, body=b"x")]),
                          ("4", [wire.format("FILE", "4", path="f", end=1, body=b"x"),
                                 wire.format("STAGE", "4", files=0)])):
            w.send(staged_run(wid, f"touch ran{wid}"))
            for m in msgs:
                w.send(m)
            got = w.until_done(wid)
            assert any(m.verb == "ERR" for m in got), got
            assert got[-1].get("exit") == "1" and not (tmp_path / f"ran{wid}").exists()
        late = w.next()         # job 4's STAGE came after it ended: no such job now
        assert (late.verb, late.get("job"), late.args[0]) == ("ERR", "4", "65")
        # A basefile nobody offered, and one whose bytes do not match.
        w.send(wire.format("BASE", path="b", sha256="0" * 64, size=1, off=0, end=1,
                           body=b"x"))
        assert w.next().verb == "ERR"
        w.send(wire.format("BASE", path="b", sha256="0" * 64, size=1))
        want = w.next()
        assert (want.verb, want.get("path")) == ("WANT", "b")
        w.send(wire.format("BASE", path="b", sha256="0" * 64, size=1, off=0, end=1,
                           body=b"x"))
        err = w.next()
        assert err.verb == "ERR" and "SHA-256" in err.args[1]
        assert not (tmp_path / "b").exists()
        # And a good job after all that: files in, returned, cleaned up.
        w.send(staged_run("5", "sh -c 'tr a-z A-Z < in/x > out'"))
        w.send(wire.format("STAGE", "5", wd="wd", cleanup=1, files=1, body=b"out"))
        w.send(wire.format("FILE", "5", path="in/x", mode="600", end=1, body=b"abc\n"))
        got = w.until_done("5")
        files = [m for m in got if m.verb == "FILE"]
        assert [(m.get("path"), m.body) for m in files] == [("out", b"ABC\n")]
        assert got[-1].get("exit") == "0"
        assert not (tmp_path / "wd").exists()
    finally:
        w.close()
