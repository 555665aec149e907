"""gridd hub and workers as real processes on loopback: gridmap --hub gives
the same output as local runs; failures end in exactly one result; bad
input on a raw socket gets an error while the hub keeps serving."""

import json
import os
import signal
import subprocess
import time

import pytest

from hubfixtures import (Grid, clean_env, grid, pids_alive, raw, raw_client,  # noqa: F401
                         tool, wait_until)
from gridtools.proto import wire


def both(g, *args, input=None):
    """Run gridmap locally and through the hub; return both results."""
    local = subprocess.run([*tool("gridmap"), "-j2", *args], input=input, capture_output=True,
                           env=clean_env(), timeout=60, cwd=g.tmp)
    remote = subprocess.run([*tool("gridmap"), "--hub", g.addr, *args], input=input,
                            capture_output=True, env=clean_env(), timeout=60, cwd=g.tmp)
    return local, remote


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One hub with two workers (1 and 2 slots) for the read-only tests."""
    g = Grid(tmp_path_factory.mktemp("shared"))
    try:
        g.start_hub()
        g.start_worker(slots=1, name="a")
        g.start_worker("--tag", "site=lab2", slots=2, name="b")
        yield g
    finally:
        g.close()


GOLDEN = [
    (["-k", "sh", "-c", "echo out {}; echo err {} >&2; exit $(({} % 3 == 0))"],
     b"".join(b"%d\n" % i for i in range(1, 31))),
    (["-k", "printf", "%s|\\n", "{}", ":::", "a b", "c\\d", "é", "'q'"], None),
    (["-k", "--tag", "echo", "{/.}", "{#}"], b"/x/a.txt\n/y/b.tar.gz\nc\n"),
    (["-k", "--pipe", "--block", "3k", "wc", "-l"],
     b"".join(b"line %d\n" % i for i in range(5000))),
    (["-k", "-N2", "echo", "{1}-{2}"], b"1\n2\n3\n4\n5\n"),
    (["-k", "--retries", "1", "false"], b"1\n2\n"),
    (["-k", "cat"], b"x\n"),
    (["-k", "--timeout", "0.5", "sleep"], b"0.1\n5\n"),
    (["-k", "-j1", "--halt", "now,fail=1", "sh", "-c", "'echo {}; exit {}'"], b"0\n3\n0\n"),
    (["-k", "sh", "-c", "head -c 300000 /dev/zero | tr '\\0' {}"], b"a\nb\n"),
]


@pytest.mark.parametrize("args, stdin", GOLDEN, ids=range(len(GOLDEN)))
def test_hub_output_is_identical_to_local(shared, args, stdin):
    local, remote = both(shared, *args, input=stdin)
    assert remote.stderr == local.stderr
    assert remote.stdout == local.stdout
    assert remote.returncode == local.returncode


def test_require_runs_only_on_tagged_workers(shared):
    r = shared.run("gridmap", "-k", "--json", "--require", "site=lab2", "echo", "{}",
                   input=b"1\n2\n3\n4\n")
    assert r.returncode == 0, r.stderr
    assert [json.loads(x)["stdout"] for x in r.stdout.splitlines()] == ["1\n", "2\n", "3\n", "4\n"]


def test_typed_session_like_nc(shared):
    s, f, hello = raw(shared.addr)
    assert hello.startswith(b"HELLO 1 role=hub ")
    s.sendall(b"HELLO 1 role=client nonce=" + b"0123456789abcdef" * 4 + b"\n")
    assert f.readline().startswith(b"WELCOME 1 role=hub")
    s.sendall(b"run 1 bytes=13\necho hi there")
    assert f.readline() == b"OUT 1 fd=1 bytes=9\n"
    assert f.read(9) == b"hi there\n"
    assert f.readline().startswith(b"DONE 1 exit=0 worker=")
    s.sendall(b"FROB 1\n")
    assert f.readline() == b"ERR 76 unknown verb FROB\n"
    s.sendall(b"QUIT\n")
    assert f.readline() == b"BYE\n"
    s.close()


@pytest.mark.parametrize("junk, expect, closes", [
    (b"\x00\x01garbage\xff\n", b"ERR 76 not a verb", False),
    (b"PING extra=%zz\n", b"ERR 76 bad %-escape", False),
    (b"READY slots=1\n", b"ERR 77 a client connection cannot READY", False),
    (b"RUN 1 bytes=99999999999\n", b"ERR 76 RUN: body of", True),
    (b"A" * 5000, b"ERR 76 no newline within 4096 bytes", True),
], ids=["garbage", "escape", "role", "bodysize", "longline"])
def test_bad_input_gets_an_error_and_the_hub_serves_on(shared, junk, expect, closes):
    s, f = raw_client(shared.addr)
    s.sendall(junk)
    line = f.readline()
    assert line.startswith(expect), line
    if closes:
        assert f.readline() == b""
    else:
        s.sendall(b"PING\n")
        assert f.readline() == b"PONG\n"
    s.close()
    r = shared.run("gridmap", "echo", "still", "here", input=b"1\n")
    assert r.stdout == b"still here 1\n"


def test_truncated_body_and_no_hello(shared):
    s, f = raw_client(shared.addr)
    s.sendall(b"RUN 1 bytes=100\necho")
    s.shutdown(1)
    assert f.readline().startswith(
        b"ERR 76 connection closed in the middle of a message (RUN with 4 of 100 body bytes)")
    s.close()
    s, f, _ = raw(shared.addr)
    s.sendall(b"STATUS\n")
    assert f.readline() == b"ERR 76 expected HELLO, got STATUS\n"
    s.close()


def test_no_big_bodies_before_hello(shared):
    s, f, _ = raw(shared.addr)
    s.sendall(b"HELLO 1 role=client bytes=9000000\n" + b"x" * 10000)
    assert f.readline() == b"ERR 76 say HELLO first\n"
    assert f.readline() == b""
    s.close()


def test_ctl_text_and_json(shared):
    r = shared.run("gridd", "ctl", "--hub", shared.addr, "workers")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert lines[0].split() == ["NAME", "SLOTS", "RUNNING", "STATE", "TAGS", "HOW", "PEER"]
    assert sorted(x.split()[0] for x in lines[1:]) == ["a", "b"]
    r = shared.run("gridd", "ctl", "--hub", shared.addr, "--json", "status")
    st = json.loads(r.stdout)
    assert st["workers"] == 2 and st["slots"] == 3
    r = shared.run("gridd", "ctl", "--hub", shared.addr, "cancel", "12345")
    assert r.returncode == 65 and b"no queued or running job" in r.stderr


def test_flow_control_bounds_hub_memory(shared):
    """A client that never reads: its job blocks, the hub does not grow."""
    def rss():
        with open(f"/proc/{shared.hub.pid}/status") as f:
            return int(next(x for x in f if x.startswith("VmRSS")).split()[1]) // 1024
    before = rss()
    s, f = raw_client(shared.addr)
    s.sendall(wire.format("RUN", "1", body=b"head -c 300000000 /dev/zero"))
    time.sleep(2.0)
    grown = rss() - before
    s.close()
    assert grown < 40, f"hub grew {grown} MB for a client that does not read"
    r = shared.run("gridmap", "echo", "ok", input=b"1\n")
    assert r.stdout == b"ok 1\n"


def test_input_faster_than_a_job_reads_is_held_not_lost(shared):
    """--pipe blocks larger than the hub's buffers, for jobs slower than
    their input: every byte arrives and the hub keeps serving."""
    data = b"".join(b"%07d\n" % i for i in range(5 << 20 >> 3)) * 8     # 40 MiB
    r = shared.run("gridmap", "-j1", "--require", "site=lab2", "--pipe", "--block", "12M",
                   "sh", "-c", "'sleep 0.3; wc -c'", input=data, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sum(int(x) for x in r.stdout.split()) == len(data)
    assert shared.hub.poll() is None
    assert shared.run("gridmap", "echo", "ok", input=b"1\n").stdout == b"ok 1\n"


# -- failures: each gets its own grid -------------------------------------------

def sleeper(g, name):
    """A job command that records its pid in a file, then sleeps."""
    return f"echo $$ > {g.tmp}/{name}.pid; exec sleep 30"


def kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def read_pid(g, name, timeout=10):
    path = f"{g.tmp}/{name}.pid"
    wait_until(lambda: os.path.exists(path) and open(path).read().strip(), timeout)
    return int(open(path).read())


def test_worker_kill_9_session_job_is_lost_once(grid):
    grid.start_hub()
    w = grid.start_worker(slots=1)
    p = subprocess.Popen([*tool("gridmap"), "--hub", grid.addr, "--json",
                          sleeper(grid, "j{}"), ":::", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(),
                         cwd=grid.tmp)
    pid = read_pid(grid, "j1")
    w.kill()
    out, err = p.communicate(timeout=20)
    kill(pid)
    recs = [json.loads(x) for x in out.splitlines()]
    assert len(recs) == 1 and recs[0]["status"] == "lost", (out, err)
    assert p.returncode == 1


def test_worker_kill_9_session_job_retried_elsewhere(grid):
    grid.start_hub()
    w1 = grid.start_worker(slots=1, name="first")
    # --retries 2: two tries in all, as GNU parallel counts them.
    p = subprocess.Popen([*tool("gridmap"), "--hub", grid.addr, "--retries", "2",
                          f"if test -e {grid.tmp}/second; then echo done {{}}; "
                          f"else {sleeper(grid, 'j{}')}; fi",
                          ":::", "1"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=clean_env(), cwd=grid.tmp)
    pid = read_pid(grid, "j1")
    open(f"{grid.tmp}/second", "w").close()
    grid.start_worker(slots=1, name="second")
    w1.kill()
    out, err = p.communicate(timeout=20)
    kill(pid)
    assert (out, p.returncode) == (b"done 1\n", 0), err


def test_client_disconnect_kills_its_jobs(grid):
    grid.start_hub()
    grid.start_worker(slots=2)
    p = subprocess.Popen([*tool("gridmap"), "--hub", grid.addr, sleeper(grid, "c{}"),
                          ":::", "1", "2"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=clean_env(), cwd=grid.tmp)
    pids = [read_pid(grid, "c1"), read_pid(grid, "c2")]
    assert pids_alive(pids) == pids
    p.kill()
    p.wait()
    assert wait_until(lambda: not pids_alive(pids), timeout=10), "jobs outlived their client"
    grid.wait_for(lambda s: s["running"] == 0, "status")


def test_silent_worker_is_declared_dead(grid):
    grid.start_hub("--heartbeat", "0.3")
    w = grid.start_worker(slots=1)
    p = subprocess.Popen([*tool("gridmap"), "--hub", grid.addr, "--json",
                          sleeper(grid, "d{}"), ":::", "1"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=clean_env(), cwd=grid.tmp)
    pid = read_pid(grid, "d1")
    t0 = time.monotonic()
    w.send_signal(signal.SIGSTOP)
    try:
        out, err = p.communicate(timeout=15)
    finally:
        w.send_signal(signal.SIGCONT)
        kill(pid)
    assert time.monotonic() - t0 < 5.0      # 3 x 0.3 s, and a loaded machine
    assert json.loads(out)["status"] == "lost"
    assert b"declared dead" in open(grid.hub.logpath, "rb").read()


def test_drain_worker_and_sigterm_hub(grid):
    grid.start_hub()
    w = grid.start_worker(slots=1, name="leaving")
    r = grid.run("gridd", "ctl", "--hub", grid.addr, "drain", "leaving")
    assert r.returncode == 0, r.stderr
    assert w.wait(10) == 0
    grid.start_worker(slots=1, name="staying")
    p = subprocess.Popen([*tool("gridmap"), "--hub", grid.addr, "sleep 0.5; echo slept #",
                          ":::", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=clean_env())
    grid.wait_for(lambda s: s["running"] == 1, "status")
    grid.hub.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=15)
    assert out == b"slept\n" and p.returncode == 0, err
    assert grid.hub.wait(10) == 0


def test_ctl_shutdown(grid):
    grid.start_hub()
    r = grid.run("gridd", "ctl", "--hub", grid.addr, "shutdown")
    assert r.returncode == 0, r.stderr
    assert grid.hub.wait(10) == 0


def test_stdio_worker_speaks_on_stdin_stdout(tmp_path):
    p = subprocess.Popen([*tool("gridd"), "worker", "--stdio", "--slots", "1"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=clean_env())
    try:
        r = wire.Reader()

        def recv():
            while True:
                try:
                    return next(r)
                except StopIteration:
                    r.feed(os.read(p.stdout.fileno(), 65536))
        hello = recv()
        assert hello.verb == "HELLO" and hello.get("role") == "worker"
        p.stdin.write(wire.hello("hub", wire.new_nonce()))
        p.stdin.flush()
        assert recv().verb == "WELCOME"
        assert recv().verb == "READY"
        p.stdin.write(wire.format("RUN", "1", body=b"echo from stdio"))
        p.stdin.flush()
        got = [recv() for _ in range(2)]
        assert got[0] == wire.Message("OUT", ["1"], {"fd": "1"}, b"from stdio\n")
        assert got[1].verb == "DONE" and got[1].get("exit") == "0"
        p.stdin.close()
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_worker_alone_in_a_fresh_python(tmp_path):
    """The worker imports the stdlib and exactly its MANIFEST."""
    code = ("import sys; sys.path.insert(0, %r); import gridtools.worker.serve; "
            "mods = sorted(m for m in sys.modules if m.startswith('gridtools'));"
            "print(mods); w = gridtools.worker.serve;"
            "print(sorted(m for m in w.MANIFEST if m != w.ENTRY))"
            % os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run(["python3", "-I", "-c", code], capture_output=True, text=True,
                         timeout=30)
    loaded, manifest = out.stdout.splitlines()
    assert loaded == manifest, out.stderr


def test_unix_socket_and_workdir(tmp_path):
    g = Grid(tmp_path)
    try:
        sock = os.path.join(g.tmp, "hub.sock")
        g.start_hub("--listen", f"unix:{sock}")
        work = tmp_path / "work"
        work.mkdir()
        g.addr = f"unix:{sock}"
        g.ping()
        g.start_worker("--workdir", str(work))
        r = g.run("gridmap", "--hub", g.addr, "pwd", "#", input=b"1\n")
        assert (r.stdout, r.returncode) == (str(work).encode() + b"\n", 0), r.stderr
        assert os.stat(sock).st_mode & 0o077 == 0       # only its owner may connect
    finally:
        g.close()


def test_ctl_cancel_a_session_job(grid):
    grid.start_hub()
    grid.start_worker(slots=1)
    p = subprocess.Popen([*tool("gridmap"), "--hub", grid.addr, "--retries", "3", "--json",
                          "sleep", "30", "#", ":::", "1"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=clean_env())
    jobs = grid.wait_for(lambda js: js and js[0]["state"] == "running", "jobs")
    r = grid.run("gridd", "ctl", "--hub", grid.addr, "cancel", jobs[0]["id"])
    assert r.returncode == 0, r.stderr
    out, err = p.communicate(timeout=15)
    rec = json.loads(out)
    assert (rec["status"], rec["tries"], p.returncode) == ("cancelled", 1, 1), err


def test_a_copy_of_the_manifest_runs_a_worker_with_gridd_workers_options(grid, tmp_path):
    """python3 -m gridtools.worker is gridd worker: same options, same path,
    from nothing but the MANIFEST's files in a fresh interpreter."""
    import shutil
    from gridtools.worker import serve as worker
    ship = tmp_path / "ship"
    (ship / "gridtools").mkdir(parents=True)
    base = os.path.dirname(os.path.dirname(worker.__file__))          # gridtools/
    for mod in worker.MANIFEST:
        parts = mod.split(".")[1:]
        if os.path.isdir(os.path.join(base, *parts)):
            rel = os.path.join(*parts, "__init__.py")
        else:
            rel = os.path.join(*parts[:-1], parts[-1] + ".py")
        os.makedirs(ship / "gridtools" / os.path.dirname(rel), exist_ok=True)
        shutil.copy(os.path.join(base, rel), ship / "gridtools" / rel)
    grid.start_hub()
    p = subprocess.Popen(["python3", "-E", "-s", "-m", "gridtools.worker", "--connect", grid.addr,
                          "--slots", "2", "--name", "shipped", "--tag", "kind=copy"],
                         cwd=ship, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    grid.procs.append(p)
    workers = grid.wait_for(lambda ws: [w["name"] for w in ws] == ["shipped"])
    assert workers[0]["slots"] == 2 and workers[0]["tags"] == {"kind": "copy"}
    r = grid.run("gridmap", "--hub", grid.addr, "-k", "--require", "kind=copy", "echo",
                 input=b"a\nb\n")
    assert (r.stdout, r.returncode) == (b"a\nb\n", 0), r.stderr
    bad = subprocess.run(["python3", "-E", "-s", "-m", "gridtools.worker", "--connect", "h:70000"],
                         cwd=ship, capture_output=True, timeout=30)
    assert bad.returncode == 64 and b"70000" in bad.stderr, bad.stderr
