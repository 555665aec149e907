"""gridmap --semaphore (GNU parallel's sem): real gridmap processes sharing
a semaphore in a private $XDG_RUNTIME_DIR; a slot held by a process that
is killed comes free.  No test depends on timing: waits are for files the
jobs make, bounded by a generous timeout only to fail instead of hanging.
"""

import os
import signal
import subprocess
import time

import pytest

from conftest import GRIDMAP, run_parallel
from gridtools.local import semaphore

LONG = 60       # seconds: only a failing test waits this long


@pytest.fixture
def env(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    return dict(os.environ, XDG_RUNTIME_DIR=str(run), SHELL="/bin/sh")


def gm(args, env, **kw):
    return subprocess.run([GRIDMAP, *args], capture_output=True, env=env, timeout=LONG, **kw)


def gm_bg(args, env, tmp_path):
    """gridmap whose command goes on in the background: its output goes to
    files, since the command keeps gridmap's stdout and stderr open.
    Returns (exit status, stdout, stderr) of gridmap itself."""
    with open(tmp_path / "bg.out", "wb+") as out, open(tmp_path / "bg.err", "wb+") as err:
        p = subprocess.run([GRIDMAP, *args], stdout=out, stderr=err, env=env, timeout=LONG)
        out.seek(0)
        err.seek(0)
        return p.returncode, out.read(), err.read()


def wait_for(path):
    deadline = time.monotonic() + LONG
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def holder(env, tmp_path, name="s", extra=()):
    """A gridmap --fg holding the one slot of semaphore name until killed;
    returns its Popen once its command runs."""
    mark = tmp_path / f"held-{name}"
    proc = subprocess.Popen([GRIDMAP, "--id", name, "--fg", *extra,
                             f"touch {mark}; exec sleep {LONG}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_for(mark)
    return proc


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def test_fg_exit_status(env):
    assert gm(["--semaphore", "--fg", "exit 3"], env).returncode == 3
    assert gm(["--id", "x", "--fg", "kill -9 $$"], env).returncode == 137
    p = gm(["--id", "x", "--fg", "echo", "hi"], env)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"hi\n", b"")


def test_fg_exit_status_as_gnu_sem(env, tmp_path):
    theirs = run_parallel(["--semaphore", "--id", f"gm{os.getpid()}", "--fg", "exit 3"],
                          cwd=tmp_path)
    assert theirs.returncode == gm(["--semaphore", "--fg", "exit 3"], env).returncode


def test_mutex_runs_one_at_a_time_and_wait_waits(env, tmp_path):
    """Four commands in the background on a one-slot semaphore: each makes
    a directory that must not exist (mkdir fails if another one runs),
    and --wait returns once all four are done."""
    d, log = tmp_path / "busy", tmp_path / "log"
    for i in range(4):
        assert gm_bg(["--id", "m", f"mkdir {d} || echo overlap >> {log}; sleep 0.2; "
                      f"rmdir {d}; echo {i} >> {log}"], env, tmp_path) == (0, b"", b"")
    p = gm(["--id", "m", "--wait"], env)
    assert p.returncode == 0
    assert sorted(log.read_text().split()) == ["0", "1", "2", "3"]


def test_two_slots_run_two_at_once(env, tmp_path):
    """Each command waits for the other's file: they can only both finish
    if -j2 lets them run at the same time."""
    a, b = tmp_path / "a", tmp_path / "b"
    for mine, other in ((a, b), (b, a)):
        assert gm_bg(["--id", "two", "-j2",
                      f"touch {mine}; while [ ! -e {other} ]; do sleep 0.05; done; "
                      f"touch {mine}.done"], env, tmp_path) == (0, b"", b"")
    assert gm(["--id", "two", "--wait"], env).returncode == 0
    assert (tmp_path / "a.done").exists() and (tmp_path / "b.done").exists()


def test_negative_timeout_gives_up(env, tmp_path):
    proc = holder(env, tmp_path)
    try:
        p = gm(["--id", "s", "--st", "-1", "--fg", "echo", "ran"], env)
        assert (p.returncode, p.stdout) == (75, b"")
        assert p.stderr == b"gridmap: warning: Semaphore timed out. Exiting.\n"
        p = gm(["--id", "s", "--st", "1", "--fg", "echo", "ran"], env)
        assert (p.returncode, p.stdout) == (0, b"ran\n")
        assert p.stderr == b"gridmap: warning: Semaphore timed out. Stealing the semaphore.\n"
    finally:
        stop(proc)


def test_a_killed_holder_gives_its_slot_back(env, tmp_path):
    """gridmap killed with SIGKILL while its command still runs: the slot
    is free at once (the lock went with gridmap's descriptor; the command
    never had it)."""
    proc = holder(env, tmp_path)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        p = gm(["--id", "s", "--st", f"-{LONG}", "--fg", "echo", "free"], env)
        assert (p.returncode, p.stdout) == (0, b"free\n"), p.stderr
    finally:
        stop(proc)


def test_background_holder_keeps_the_slot_until_its_command_ends(env, tmp_path):
    mark, go = tmp_path / "bg", tmp_path / "go"
    assert gm_bg(["--id", "bg", f"touch {mark}; while [ ! -e {go} ]; do sleep 0.05; done"],
                 env, tmp_path)[0] == 0
    try:
        wait_for(mark)
        p = gm(["--id", "bg", "--st", "-1", "--fg", "true"], env)
        assert p.returncode == 75
    finally:
        go.touch()
    assert gm(["--id", "bg", "--wait"], env).returncode == 0
    assert gm(["--id", "bg", "--st", "-1", "--fg", "true"], env).returncode == 0


def test_state_lives_in_the_runtime_dir(env):
    assert gm(["--id", "where", "--fg", "true"], env).returncode == 0
    path = os.path.join(env["XDG_RUNTIME_DIR"], "gridmap", "semaphores", "where")
    assert os.listdir(path) == ["slot.0"]
    assert os.stat(path).st_mode & 0o777 == 0o700


@pytest.mark.parametrize("args", [
    ["--id", "../x", "true"], ["--id", ".hidden", "true"], ["--semaphore"],
    ["--semaphore", "echo", ":::", "a"], ["--fg", "true"], ["--wait"],
    ["--st", "soon", "true"], ["--semaphore", "--fg", "--bg", "true"],
])
def test_usage_errors(env, args):
    p = gm(args, env)
    assert p.returncode == 64, p.stderr


def test_units():
    assert semaphore.parse_timeout("10") == 10
    assert semaphore.parse_timeout("-2m") == -120
    assert semaphore.parse_timeout("1.5h") == 5400
    with pytest.raises(Exception):
        semaphore.parse_timeout("1x")
    assert semaphore.directory({"XDG_RUNTIME_DIR": "/run/u"}) == "/run/u/gridmap/semaphores"
    assert semaphore.directory({"HOME": "/h"}) == "/h/.cache/gridmap/semaphores"
