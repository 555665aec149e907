"""Hubs in tiers, all real processes on loopback: a client talks to hub A,
hub B is a worker of A (gridd hub --upstream), B's workers run the jobs.
Output through both tiers is a local run's; B offers its workers' slots
and shared tags and says so again as they change; B killed mid-run leaves
each job exactly one result at the client, and B restarted takes jobs
again."""

import json
import os
import signal
import subprocess

import pytest

from hubfixtures import Grid, clean_env, tool, wait_until

CASES = [
    (["-k", "sh", "-c", "echo out {}; echo err {} >&2; exit $(({} % 3 == 0))"],
     b"".join(b"%d\n" % i for i in range(1, 31))),
    (["-k", "printf", "%s|\\n", "{}", ":::", "a b", "c\\d", "é", "'q'"], None),
    (["-k", "--pipe", "--block", "3k", "wc", "-l"],
     b"".join(b"line %d\n" % i for i in range(5000))),
    (["-k", "--retries", "1", "false"], b"1\n2\n"),
    (["-k", "cat"], b"x\n"),
    (["-k", "--timeout", "0.5", "sleep"], b"0.1\n5\n"),
    # --halt now kills the running job: KILL passes down both tiers.
    (["-k", "-j1", "--halt", "now,fail=1", "sh", "-c", "'echo {}; exit {}'"], b"0\n3\n0\n"),
    # More than the worker's 1 MiB window per job: ACKs pass down both tiers.
    (["-k", "sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' {}"], b"a\nb\nc\n"),
]


def tiers(tmp, *b_args):
    """Hub A, and hub B as A's worker; returns (a, b), neither with workers."""
    a = Grid(os.path.join(tmp, "a"))
    b = Grid(os.path.join(tmp, "b"))
    for g in (a, b):
        os.makedirs(g.tmp, exist_ok=True)
    a.start_hub()
    b.start_hub("--upstream", a.addr, *b_args)
    return a, b


def wait_offer(a, slots, tags):
    a.wait_for(lambda ws: [(w["slots"], w["tags"]) for w in ws] == [(slots, tags)])


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("tiers"))
    a, b = tiers(tmp)
    try:
        b.start_worker("--tag", "site=lab", "--tag", "has=genome", slots=1, name="b1")
        b.start_worker("--tag", "site=lab", slots=2, name="b2")
        wait_offer(a, 3, {"site": "lab"})
        yield a, b
    finally:
        b.close()
        a.close()


@pytest.mark.parametrize("args, stdin", CASES, ids=range(len(CASES)))
def test_output_through_two_tiers_is_identical_to_local(shared, args, stdin):
    a, _ = shared
    local = subprocess.run([*tool("gridmap"), "-j3", *args], input=stdin, capture_output=True,
                           env=clean_env(), timeout=60, cwd=a.tmp)
    remote = subprocess.run([*tool("gridmap"), "--hub", a.addr, *args], input=stdin,
                            capture_output=True, env=clean_env(), timeout=60, cwd=a.tmp)
    assert remote.stderr == local.stderr
    assert remote.stdout == local.stdout
    assert remote.returncode == local.returncode


def test_require_passes_only_tags_every_worker_below_has(shared):
    a, _ = shared
    ok = a.run("gridmap", "--require", "site=lab", "echo", "{}", ":::", "x")
    assert (ok.stdout, ok.returncode) == (b"x\n", 0), ok.stderr


def test_ctl_workers_shows_each_side_of_a_tier(shared):
    """Above, the middle hub is a worker that came "upstream" (its HELLO
    says hub=1); below, it counts the hub above as one client."""
    a, b = shared
    ws = a.ctl("workers")
    assert [(w["how"], w["slots"]) for w in ws] == [("upstream", 3)], ws
    assert sorted((w["name"], w["how"]) for w in b.ctl("workers")) == \
        [("b1", "in"), ("b2", "in")]
    assert b.ctl("status")["clients"] == 2     # the hub above, and this ctl
    shown = a.run("gridd", "ctl", "--hub", a.addr, "workers").stdout.decode()
    assert shown.splitlines()[1].split()[5] == "upstream", shown


def test_only_a_worker_says_hub_1_in_its_hello(shared):
    from hubfixtures import raw
    from gridtools.proto import wire
    a, _ = shared
    for role, value in (("client", "1"), ("worker", "2"), ("worker", "\u00b9")):
        s, f, _ = raw(a.addr)
        s.sendall(wire.hello(role, wire.new_nonce(), hub=value))
        got = f.readline()
        assert got.startswith(b"ERR 64 field=hub got="), (role, value, got)
        assert f.readline() == b""              # and closed
        s.close()


def test_the_offer_follows_the_workers_below(tmp_path):
    a, b = tiers(str(tmp_path))
    try:
        wait_offer(a, 0, {})
        w1 = b.start_worker("--tag", "site=lab", slots=2, name="one")
        wait_offer(a, 2, {"site": "lab"})
        w2 = b.start_worker(slots=3, name="two")
        wait_offer(a, 5, {})
        w2.kill()
        wait_offer(a, 2, {"site": "lab"})
        w1.kill()
        wait_offer(a, 0, {})
        r = b.run("gridd", "ctl", "status", "--hub", b.addr)
        assert r.returncode == 0, r.stderr
    finally:
        b.close()
        a.close()


def test_kill_9_the_middle_hub_each_job_ends_once_and_restarted_it_runs_jobs(tmp_path):
    a, b = tiers(str(tmp_path))
    try:
        b.start_worker(slots=2, name="below")
        wait_offer(a, 2, {})
        mark = os.path.join(a.tmp, "restarted")
        # Until B is restarted a job records its pid and sleeps; after, it echoes.
        cmd = (f"if test -e {mark}; then echo ok {{}}; "
               f"else echo $$ > {a.tmp}/j{{}}.pid; exec sleep 60; fi")
        p = subprocess.Popen([*tool("gridmap"), "--hub", a.addr, "--json", cmd,
                              ":::", *map(str, range(1, 7))],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(),
                             cwd=a.tmp)
        pidfiles = [os.path.join(a.tmp, f"j{i}.pid") for i in (1, 2)]
        assert wait_until(lambda: all(os.path.exists(f) and open(f).read().strip()
                                      for f in pidfiles), timeout=20), "jobs did not start"
        pids = [int(open(f).read()) for f in pidfiles]
        b.kill_hub(signal.SIGKILL)
        a.wait_for(lambda ws: ws == [])
        open(mark, "w").close()
        b.start_hub("--upstream", a.addr)
        out, err = p.communicate(timeout=60)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        recs = [json.loads(x) for x in out.splitlines()]
        # One record per job, each job once: 1 and 2 were lost with B (no
        # retries asked for); 3 to 6 waited at A and ran once B was back.
        got = sorted((r["input"][0], r["status"], r.get("stdout")) for r in recs)
        assert len(recs) == 6, (out, err)
        assert got == [("1", "lost", ""), ("2", "lost", "")] + [
            (str(i), "ok", f"ok {i}\n") for i in range(3, 7)], (out, err)
        assert p.returncode == 2, err
    finally:
        b.close()
        a.close()


def test_a_hostile_hub_above_costs_its_connection_never_the_hub(tmp_path):
    """A fake hub above greets B, then sends what no hub should: B answers
    each with an error, or drops that connection and dials again; it
    serves its own clients throughout, and after BYE it calls no more."""
    import socket
    from gridtools.proto import wire
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.settimeout(30)
    b = Grid(str(tmp_path))
    junk = [b"RUN x/y bytes=4\ntrue", b"RUN 1 timeout=inf bytes=4\ntrue", b"ACK 1 n=-1\n",
            b"CANCEL\n", b"KILL 1 sig=999\n", b"IN 9 bytes=1\nx", b"SUBMIT bytes=4\ntrue",
            b"READY slots=5\n", b"FROB 1\n", b"ACK 1 n=99999999999999999999\n",
            b"OUT 1 fd=1 bytes=1\nx", b"ACK 1 n=1 n=2\n", b"ACK 1 n=%C2%B2\n",
            b"CANCEL a/b\n", b"KILL 1 sig=%C2%B2\n", b"ACK \xff n=1\n",
            b"RUN 1 bytes=99999999999\n"]

    def meet():
        s, _ = lsock.accept()
        s.settimeout(30)
        f = s.makefile("rb")
        s.sendall(wire.hello("hub", wire.new_nonce()))
        assert f.readline() == b"\n"           # a TLS hub would refuse plain text at once
        hello, _ = wire.split(f.readline())
        assert wire.check_hello(hello, roles=("worker",))[0] == "worker"
        s.sendall(wire.format("WELCOME", wire.VERSION, role="hub"))
        ready, _ = wire.split(f.readline())
        assert ready.verb == "READY", ready
        return s, f

    try:
        b.start_hub("--upstream", "127.0.0.1:%d" % lsock.getsockname()[1])
        b.start_worker(slots=1, name="below")
        s, f = meet()
        dropped = 0
        for data in junk:
            s.sendall(data + b"PING\n")
            while True:
                line = f.readline()
                if not line:            # that cost the connection: B calls again
                    dropped += 1
                    s.close()
                    s, f = meet()
                    break
                if line.startswith(b"PONG"):
                    break
                assert line.startswith((b"ERR ", b"READY ")), (data, line)
            r = b.run("gridmap", "--hub", b.addr, "echo", "{}", ":::", "still")
            assert (r.stdout, r.returncode) == (b"still\n", 0), (data, r.stderr)
        assert dropped < len(junk)
        # A real job from above, cancelled there: one DONE comes up.
        s.sendall(wire.format("RUN", "5", body=b"sleep 30") + wire.format("CANCEL", "5"))
        while True:
            msg, _ = wire.split(f.readline())
            if msg.verb == "DONE":
                break
            assert msg.verb == "READY", msg
        assert (msg.arg(0), msg.get("outcome")) == ("5", "cancelled"), msg
        s.sendall(b"BYE\n")
        assert f.readline() == b""
        s.close()
        assert wait_until(lambda: "not connecting again" in open(b.hub.logpath).read())
    finally:
        b.close()
        lsock.close()


def test_durable_jobs_run_through_a_tier(shared):
    a, _ = shared
    r = a.run("gridsub", "--wait", "echo durable; exit 3")
    assert (r.stdout, r.returncode) == (b"durable\n", 3), r.stderr


def test_the_hub_above_restarted_is_dialled_again(tmp_path):
    a, b = tiers(str(tmp_path))
    try:
        b.start_worker(slots=2, name="below")
        wait_offer(a, 2, {})
        a.kill_hub(signal.SIGKILL)
        a.start_hub()                   # the same port, the same state
        wait_offer(a, 2, {})
        r = a.run("gridmap", "--hub", a.addr, "echo", "{}", ":::", "again")
        assert (r.stdout, r.returncode) == (b"again\n", 0), r.stderr
    finally:
        b.close()
        a.close()


def test_upstream_key_proves_the_worker_key_above(tmp_path):
    a = Grid(os.path.join(str(tmp_path), "a"))
    b = Grid(os.path.join(str(tmp_path), "b"))
    for g in (a, b):
        os.makedirs(g.tmp)
    key = os.path.join(str(tmp_path), "worker.key")
    wrong = os.path.join(str(tmp_path), "wrong.key")
    for path, text in ((key, "s3cret-for-workers\n"), (wrong, "not-the-key\n")):
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
    c = Grid(os.path.join(str(tmp_path), "c"))
    os.makedirs(c.tmp)
    try:
        a.start_hub("--worker-key", key)
        b.start_hub("--upstream", a.addr, "--upstream-key", key)
        b.start_worker(slots=1, name="below")
        wait_offer(a, 1, {})
        r = a.run("gridmap", "--hub", a.addr, "echo", "{}", ":::", "keyed")
        assert (r.stdout, r.returncode) == (b"keyed\n", 0), r.stderr
        c.start_hub("--upstream", a.addr, "--upstream-key", wrong)
        assert wait_until(lambda: "handshake" in open(c.hub.logpath).read()), \
            open(c.hub.logpath).read()
        assert "authentication as worker failed" in open(a.hub.logpath).read()
        assert len(a.ctl("workers")) == 1
    finally:
        for g in (c, b, a):
            g.close()


def test_a_client_gone_above_cancels_its_jobs_below(shared):
    """gridmap killed: A cancels its jobs at B (CANCEL), B at its workers."""
    a, _ = shared
    p = subprocess.Popen([*tool("gridmap"), "--hub", a.addr,
                          f"echo $$ > {a.tmp}/gone{{}}.pid; exec sleep 60", ":::", "1", "2"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env=clean_env(), cwd=a.tmp)
    files = [os.path.join(a.tmp, f"gone{i}.pid") for i in (1, 2)]
    assert wait_until(lambda: all(os.path.exists(f) and open(f).read().strip()
                                  for f in files), timeout=20)
    pids = [int(open(f).read()) for f in files]
    p.kill()
    p.wait()

    def alive():
        out = []
        for pid in pids:
            try:
                os.kill(pid, 0)
                out.append(pid)
            except ProcessLookupError:
                pass
        return out
    assert wait_until(lambda: not alive(), timeout=15), "jobs outlived their client"
    a.wait_for(lambda s: s["running"] == 0, "status")


def test_the_middle_hub_drained_offers_nothing_and_its_running_jobs_finish(tmp_path):
    a, b = tiers(str(tmp_path))
    try:
        b.start_worker(slots=2, name="below")
        wait_offer(a, 2, {})
        go = os.path.join(a.tmp, "go")
        p = subprocess.Popen([*tool("gridmap"), "--hub", a.addr,
                              f"echo started > {a.tmp}/s{{}}; "
                              f"while ! test -e {go}; do sleep 0.05; done; echo done {{}}",
                              ":::", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=clean_env(), cwd=a.tmp)
        assert wait_until(lambda: os.path.exists(os.path.join(a.tmp, "s1")), timeout=20)
        b.hub.send_signal(signal.SIGTERM)
        wait_offer(a, 0, {})
        open(go, "w").close()
        out, err = p.communicate(timeout=60)
        assert (out, p.returncode) == (b"done 1\n", 0), err
        assert b.hub.wait(30) == 0
        a.wait_for(lambda ws: ws == [])
    finally:
        b.close()
        a.close()


def test_a_client_that_reads_nothing_above_has_its_jobs_cancelled_below(tmp_path):
    """The stall timeout of the hub the client is connected to ends its
    jobs, and the cancel passes down to the worker below the middle hub."""
    import socket
    from hubfixtures import raw_client
    from gridtools.proto import wire
    a = Grid(os.path.join(tmp_path, "a"))
    b = Grid(os.path.join(tmp_path, "b"))
    try:
        for g in (a, b):
            os.makedirs(g.tmp)
        a.start_hub("--stall-timeout", "2")
        b.start_hub("--upstream", a.addr)
        b.start_worker(slots=1, name="below")
        wait_offer(a, 1, {})
        s, _ = raw_client(a.addr)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(wire.format("RUN", "1", body=b"yes"))     # endless output, never read
        b.wait_for(lambda ws: [w["running"] for w in ws] == [1])
        assert wait_until(lambda: "read nothing for" in open(a.hub.logpath).read(),
                          timeout=60), open(a.hub.logpath).read()
        b.wait_for(lambda ws: [w["running"] for w in ws] == [0], timeout=30)
        s.close()
    finally:
        b.close()
        a.close()
