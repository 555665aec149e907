"""gridcat against a real hub: real gridcat processes on loopback, killed
with SIGKILL where the story needs it (the hub too)."""

import json
import os
import signal
import subprocess
import time

from hubfixtures import clean_env, grid, tool, wait_until  # noqa: F401
from gridtools.cli import gridcat
from gridtools.hub import client as hubclient
from gridtools.io import net


def cat(g, *args, **kw):
    return g.run("gridcat", *args, **kw)


def spawn(g, *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE):
    p = subprocess.Popen([*tool("gridcat"), *args], stdin=stdin, stdout=stdout,
                         stderr=subprocess.PIPE, env=clean_env(GRID_HUB=g.addr))
    g.procs.append(p)
    return p


def streams_now(g):
    c = hubclient.Client(g.addr, g.client_env)
    try:
        return hubclient.streams(c)
    finally:
        c.close()


def topic(g, name):
    return next((t for t in streams_now(g)["topics"] if t["name"] == name), None)


def queue(g, name):
    return next((q for q in streams_now(g)["queues"] if q["name"] == name), None)


def subscribed(g, name, n):
    assert wait_until(lambda: (topic(g, name) or {}).get("subscribers") == n), topic(g, name)


def hub_rss_kib(g):
    with open(f"/proc/{g.hub.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_fan_out_every_subscriber_sees_the_same_order(grid):
    grid.start_hub()
    subs = [spawn(grid, "sub", "news", "-n", "3000") for _ in range(3)]
    subscribed(grid, "news", 3)
    pubs = [spawn(grid, "pub", "news", stdin=subprocess.PIPE) for _ in range(2)]
    for k, p in enumerate(pubs):
        p.stdin.write(b"".join(b"p%d-%d\n" % (k, i) for i in range(1500)))
        p.stdin.close()
    assert [p.wait(60) for p in pubs] == [0, 0]
    outs = [s.communicate(timeout=60) for s in subs]
    assert [s.returncode for s in subs] == [0, 0, 0]
    lines = [o.splitlines() for o, _ in outs]
    assert len(lines[0]) == 3000 and lines[0] == lines[1] == lines[2]
    # Each publisher's own messages keep their order inside the one order.
    for k in range(2):
        mine = [x for x in lines[0] if x.startswith(b"p%d-" % k)]
        assert mine == [b"p%d-%d" % (k, i) for i in range(1500)]
    assert all(err == b"" for _, err in outs)


def test_100k_lines_stdin_to_topic_to_stdout_none_lost(grid):
    grid.start_hub()
    sub = spawn(grid, "sub", "big", "-n", "100000")
    subscribed(grid, "big", 1)
    data = b"".join(b"%d\n" % i for i in range(100000))
    r = cat(grid, "pub", "big", input=data)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
    out, err = sub.communicate(timeout=60)
    assert (sub.returncode, err) == (0, b"")
    assert out == data


def test_null_delimited_messages_keep_their_newlines(grid):
    grid.start_hub()
    msgs = [b"one\nline", b"two", b"\xff\x00"[:1]]
    r = cat(grid, "pub", "-0", "bin", input=b"\0".join(msgs) + b"\0")
    assert r.returncode == 0, r.stderr
    r = cat(grid, "sub", "-0", "bin", "--from", "beginning", "-e")
    assert (r.returncode, r.stdout) == (0, b"\0".join(msgs) + b"\0")
    r = cat(grid, "sub", "bin", "--from=-1", "-e", "--json")
    assert json.loads(r.stdout) == {"topic": "bin", "offset": 2, "message": "\\xff"}


def test_framed_messages_carry_any_bytes_through_a_topic_and_a_queue(grid):
    grid.start_hub()
    msgs = [b"one\nline", b"", b"nul\0and\xff", b"7:looks:framed\n"]
    framed = b"".join(b"%d:%s\n" % (len(m), m) for m in msgs)
    r = cat(grid, "pub", "--framed", "raw", input=framed)
    assert r.returncode == 0, r.stderr
    r = cat(grid, "sub", "--framed", "raw", "--from", "beginning", "-e")
    assert (r.returncode, r.stdout) == (0, framed)
    assert cat(grid, "put", "--framed", "rawq", input=framed).returncode == 0
    r = cat(grid, "take", "--framed", "rawq", "-e")
    assert (r.returncode, r.stdout) == (0, framed)


def test_badly_framed_input_exits_65_after_the_messages_before_it(grid):
    grid.start_hub()
    for bad, why in ((b"3:abc\n2:abc\n", b"not 2 bytes and a newline"),
                     (b"3:abc\nx\n", b"does not start with LENGTH:"),
                     (b"3:abc\n5:ab", b"ends inside a message")):
        r = cat(grid, "pub", "--framed", "bad", input=bad)
        assert r.returncode == 65 and why in r.stderr, (bad, r.stderr)
        assert len(r.stderr.splitlines()) == 1, r.stderr
    r = cat(grid, "sub", "bad", "--from", "beginning", "-e")
    assert r.stdout == b"abc\n" * 3
    r = cat(grid, "pub", "--framed", "-0", "bad", input=b"")
    assert r.returncode == 64


def test_a_message_over_the_limit_is_refused_after_the_ones_before_it(grid):
    grid.start_hub()
    big = b"x" * ((16 << 20) + 1)
    r = cat(grid, "pub", "long", input=b"first\nsecond\n" + big + b"\n")
    assert r.returncode == 65 and b"longer than" in r.stderr, r.stderr
    r = cat(grid, "sub", "long", "--from", "beginning", "-e")
    assert r.stdout == b"first\nsecond\n"


def test_named_subscription_resumes_after_kill_9_of_subscriber_and_of_hub(grid):
    grid.start_hub()
    r = cat(grid, "pub", "--durable", "log", input=b"".join(b"%d\n" % i for i in range(100)))
    assert r.returncode == 0, r.stderr
    # A subscriber that prints 30 and dies by SIGKILL (it is stopped while
    # it waits for more: its offset moved only for what it wrote).
    r = cat(grid, "sub", "log", "--name", "cron", "--from", "beginning", "-n", "30")
    assert r.stdout.splitlines() == [b"%d" % i for i in range(30)]
    p = spawn(grid, "sub", "log", "--name", "cron")
    first = p.stdout.readline()
    assert first == b"30\n"
    assert wait_until(lambda: topic(grid, "log")["named"]["cron"] == 100)
    p.kill()
    p.wait()
    grid.kill_hub()
    grid.start_hub()
    r = cat(grid, "pub", "log", input=b"100\n101\n")
    assert r.returncode == 0, r.stderr
    r = cat(grid, "sub", "log", "--name", "cron", "-e")
    assert (r.returncode, r.stdout) == (0, b"100\n101\n")
    # The retained messages came back from the journal too.
    r = cat(grid, "sub", "log", "--from", "beginning", "-e")
    assert r.stdout.splitlines() == [b"%d" % i for i in range(102)]


def test_competing_takers_one_killed_every_message_taken_once(grid):
    grid.start_hub()
    n = 1000
    msgs = [b"m%04d-" % i + b"x" * 12000 for i in range(n)]
    r = cat(grid, "put", "work", input=b"\n".join(msgs) + b"\n")
    assert r.returncode == 0, r.stderr
    # The victim's stdout is a pipe nobody reads: it takes 10 messages,
    # blocks writing them (120 kB into a 64 kB pipe), and so never
    # acknowledges them; then it is killed mid-run.
    victim = spawn(grid, "take", "work", "--window", "10")
    assert wait_until(lambda: queue(grid, "work")["taken"] == 10)
    files = [open(os.path.join(grid.tmp, f"taker{i}"), "w+b") for i in range(3)]
    takers = [spawn(grid, "take", "work", "--window", "16", "--timeout", "3", stdout=f)
              for f in files]
    assert wait_until(lambda: queue(grid, "work")["ready"] < n - 200)
    victim.kill()
    victim.wait()
    assert [t.wait(60) for t in takers] == [0, 0, 0]
    outs = []
    for f in files:
        f.seek(0)
        outs.append(f.read())
        f.close()
    got = [line for o in outs for line in o.splitlines()]
    assert len(got) == n and set(got) == set(msgs)      # none lost, none twice
    assert all(outs)                                    # all three took some
    assert queue(grid, "work") == {"name": "work", "ready": 0, "taken": 0, "bytes": 0,
                                   "takers": 0}


def test_queue_messages_acknowledged_to_the_producer_survive_kill_9_of_the_hub(grid):
    grid.start_hub()
    r = cat(grid, "put", "jobs", input=b"a\nb\nc\n")
    assert r.returncode == 0, r.stderr
    r = cat(grid, "take", "jobs", "-n", "1")
    assert r.stdout == b"a\n"
    grid.kill_hub()
    grid.start_hub()
    r = cat(grid, "take", "jobs", "-e")
    assert (r.returncode, r.stdout) == (0, b"b\nc\n")
    r = cat(grid, "take", "jobs", "-e")
    assert (r.returncode, r.stdout) == (1, b"")


def test_associative_take_and_read(grid):
    grid.start_hub()
    cat(grid, "put", "tuples", input=b"point 1 2\nresult 42\npoint 3 4\n")
    r = cat(grid, "read", "tuples", "--match", "^point 3")
    assert (r.returncode, r.stdout) == (0, b"point 3 4\n")
    r = cat(grid, "take", "tuples", "--match", "^result", "-n", "1")
    assert (r.returncode, r.stdout) == (0, b"result 42\n")
    r = cat(grid, "take", "tuples", "--match", "^result", "-e")
    assert (r.returncode, r.stdout) == (1, b"")
    # A take that waits for a match gets it when it is put.
    p = spawn(grid, "take", "tuples", "--match", "done$", "-n", "1")
    assert wait_until(lambda: queue(grid, "tuples")["takers"] == 1)
    cat(grid, "put", "tuples", input=b"not yet\nall done\n")
    assert p.communicate(timeout=30)[0] == b"all done\n"
    r = cat(grid, "take", "tuples", "-e")
    assert r.stdout == b"point 1 2\npoint 3 4\nnot yet\n"
    r = cat(grid, "read", "tuples", "--timeout", "0.2")
    assert (r.returncode, r.stdout, r.stderr) == (1, b"", b"")


def test_job_output_followed_live_then_its_status(grid):
    grid.start_hub()
    grid.start_worker()
    # gridsub joins its words into one shell command line, as ssh does.
    r = grid.run("gridsub", "--", "echo one; sleep 1; echo two >&2; exit 7")
    did = r.stdout.strip().decode()
    p = spawn(grid, "job", did)
    assert p.stdout.readline() == b"one\n"      # while the job still runs
    out, err = p.communicate(timeout=30)
    assert (p.returncode, out, err) == (7, b"", b"two\n")


def test_events_for_a_worker_joining_and_a_job_finishing(grid):
    grid.start_hub()
    ev = spawn(grid, "events", "--json", "--timeout", "20")
    subscribed(grid, "_events", 1)
    grid.start_worker(name="ew1", slots=2)
    r = grid.run("gridsub", "--wait", "true")
    assert r.returncode == 0, r.stderr
    records = []
    for line in ev.stdout:          # until job.done, or 20 s without an event
        records.append(json.loads(line))
        if records[-1]["event"] == "job.done":
            break
    ev.kill()
    kinds = [x["event"] for x in records]
    joined = [x for x in records if x["event"] == "worker.joined"]
    assert joined and joined[0]["name"] == "ew1" and joined[0]["slots"] == "2"
    assert kinds.index("job.queued") < kinds.index("job.started") < kinds.index("job.done")


def test_a_subscriber_that_never_reads_costs_bounded_memory_and_slows_nobody(grid):
    grid.start_hub()
    # The slow one: a stopped process whose socket buffer fills and stays full.
    slow = spawn(grid, "sub", "flood", "--from", "beginning")
    subscribed(grid, "flood", 1)
    slow.send_signal(signal.SIGSTOP)
    line = b"x" * 99 + b"\n"
    chunk = line * 50000
    r = cat(grid, "pub", "flood", "--keep", "20000", input=chunk)
    assert r.returncode == 0, r.stderr
    rss0 = hub_rss_kib(grid)
    r = cat(grid, "pub", "flood", input=chunk * 3)    # not held back by the sleeper
    assert (r.returncode, r.stderr) == (0, b"")
    # 20 MB went through; the hub holds its retention (2 MB) and about
    # SUB_BUFFER plus a catch-up chunk for the sleeper, not the 20 MB.
    grown = hub_rss_kib(grid) - rss0
    assert grown < 12 * 1024, f"hub RSS grew by {grown} KiB"
    t = topic(grid, "flood")
    assert t["messages"] == 20000 and t["next"] == 200000
    # Woken, the sleeper catches up from the log and is told what it lost.
    slow.send_signal(signal.SIGCONT)
    got = 0
    deadline = time.monotonic() + 60
    while got < 200000 and time.monotonic() < deadline:
        line_ = slow.stdout.readline()
        got = got + 1 if line_ else got
        if line_ and got > 1000:
            break
    slow.kill()
    err = slow.stderr.read().decode()
    assert "messages of flood lost" in err, err


def test_falling_off_retention_reports_the_count_and_exit_status_3(grid):
    grid.start_hub()
    r = cat(grid, "pub", "short", "--keep", "5", input=b"".join(b"%d\n" % i for i in range(20)))
    assert r.returncode == 0
    r = cat(grid, "sub", "short", "--from", "3", "-e")
    assert r.returncode == gridcat.LOST == 3
    assert r.stdout.splitlines() == [b"%d" % i for i in range(15, 20)]
    assert r.stderr.decode() == ("gridcat: 12 messages of short lost: retention overtook this "
                                 "subscriber (going on at offset 15)\n")


def test_a_worker_cannot_publish_subscribe_or_take(grid):
    """Streams are a client's right: a connection that proved the worker
    key is refused with ERR 77, and a gridcat with the worker key cannot
    even say HELLO as a client."""
    write = lambda name, text: open(os.path.join(grid.tmp, name), "w").write(text)  # noqa: E731
    write("c.key", "client-secret\n")
    write("w.key", "worker-secret\n")
    grid.client_env = clean_env(GRID_KEY="client-secret")
    grid.start_hub("--client-key", os.path.join(grid.tmp, "c.key"),
                   "--worker-key", os.path.join(grid.tmp, "w.key"))
    chan, _ = net.dial(grid.addr, "worker", clean_env(GRID_KEY="worker-secret"))
    try:
        for verb in ("PUB news bytes=1\nx", "SUB news", "PUT q bytes=1\nx", "TAKE q",
                     "READ q", "STREAMS"):
            chan.send(verb.encode() + b"\n")
            reply = chan.recv(10)
            assert reply.verb == "ERR" and reply.args[0] == "77", (verb, reply)
    finally:
        chan.close()
    r = grid.run("gridcat", "put", "q", input=b"x\n",
                 env=clean_env(GRID_HUB=grid.addr, GRID_KEY="worker-secret"))
    assert r.returncode == 77, r.stderr
    r = grid.run("gridcat", "put", "q", input=b"x\n",
                 env=clean_env(GRID_HUB=grid.addr, GRID_KEY="client-secret"))
    assert (r.returncode, r.stderr) == (0, b"")


def test_usage_errors_exit_64_and_quiet_success(grid):
    grid.start_hub()
    for args in (["sub"], ["take", "q", "--window", "0"], ["sub", "t", "--from", "yesterday"],
                 ["take", "q", "--match", "("], ["nope"]):
        r = cat(grid, *args)
        assert r.returncode == 64, (args, r.stderr)
    r = cat(grid, "pub", "bad name", input=b"x\n")
    assert r.returncode == 64 and r.stderr.startswith(b"gridcat: error: "), r.stderr
    r = cat(grid, "sub", "t", "-e")
    assert (r.returncode, r.stdout, r.stderr) == (1, b"", b"")
    r = cat(grid, "job", "12345")
    assert r.returncode == 65, r.stderr
