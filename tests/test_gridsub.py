"""gridsub against a real hub: ids, --wait, --result later, and durability:
kill -9 of the hub with jobs queued and running, then a restart, and every
acknowledged job completes with exactly one result."""

import json
import os
import re
import signal
import subprocess
import time

from hubfixtures import clean_env, grid, tool, wait_until  # noqa: F401


def test_submit_then_collect_later(grid):
    grid.start_hub()
    grid.start_worker(slots=2)
    r = grid.run("gridsub", "echo", "hello")
    assert r.returncode == 0, r.stderr
    jid = r.stdout.decode().strip()
    assert jid.isdigit()
    r = grid.run("gridsub", "--result", jid)
    assert (r.stdout, r.returncode) == (b"hello\n", 0)
    r = grid.run("gridsub", "--result", jid)
    assert r.returncode == 65 and b"no such job" in r.stderr


def test_wait_is_like_running_it_here(grid):
    grid.start_hub()
    grid.start_worker()
    r = grid.run("gridsub", "--wait", "echo out; echo err >&2; exit 3")
    assert (r.stdout, r.stderr, r.returncode) == (b"out\n", b"err\n", 3)
    r = grid.run("gridsub", "--wait", "kill -USR1 $$")
    assert r.returncode == 128 + signal.SIGUSR1
    r = grid.run("gridsub", "--wait", "--timeout", "0.3", "sleep", "10")
    assert r.returncode == 124


def test_result_waits_for_an_unfinished_job(grid):
    grid.start_hub()
    r = grid.run("gridsub", "echo", "late")     # queued: no worker yet
    jid = r.stdout.decode().strip()
    p = subprocess.Popen([*tool("gridsub"), "--result", jid], stdout=subprocess.PIPE,
                         env=clean_env(GRID_HUB=grid.addr))
    time.sleep(0.3)
    assert p.poll() is None
    grid.start_worker()
    out, _ = p.communicate(timeout=15)
    assert (out, p.returncode) == (b"late\n", 0)


def test_dash_reads_one_command_per_line(grid):
    grid.start_hub()
    grid.start_worker(slots=2)
    r = grid.run("gridsub", "-", input=b"echo a\n\necho b\nexit 4\n")
    ids = r.stdout.decode().split()
    assert len(ids) == 3 and len(set(ids)) == 3
    outs = [grid.run("gridsub", "--result", i) for i in ids]
    assert [(o.stdout, o.returncode) for o in outs] == [(b"a\n", 0), (b"b\n", 0), (b"", 4)]


def test_retries_and_require(grid):
    grid.start_hub()
    grid.start_worker("--tag", "gpu=yes", slots=1, name="gpu")
    grid.start_worker(slots=1, name="plain")
    flag = os.path.join(grid.tmp, "tried")
    r = grid.run("gridsub", "--wait", "--retries", "2",
                 f"test -e {flag} && echo second || {{ touch {flag}; exit 1; }}")
    assert (r.stdout, r.returncode) == (b"second\n", 0)
    r = grid.run("gridsub", "-", "--require", "gpu=yes", "--wait",
                 input=b"echo $PWD\n" * 4)
    assert r.returncode == 0
    r = grid.run("gridd", "ctl", "--hub", grid.addr, "--json", "workers")
    assert r.returncode == 0


def test_no_hub_exits_69(tmp_path):
    r = subprocess.run([*tool("gridsub"), "--hub", "127.0.0.1:1", "true"],
                       capture_output=True, env=clean_env(), timeout=30)
    assert r.returncode == 69 and r.stderr.startswith(b"gridsub: error: cannot connect")


def test_usage_errors_exit_64(tmp_path):
    for args in ([], ["--result", "x"], ["--retries", "-1", "true"], ["--result", "1", "true"]):
        r = subprocess.run([*tool("gridsub"), *args], capture_output=True,
                           env=clean_env(), timeout=30)
        assert r.returncode == 64, (args, r.stderr)


def test_hub_kill_9_and_restart_every_job_completes_once(grid):
    """Durable jobs queued and running when the hub is killed: after a
    restart every acknowledged job has exactly one result."""
    grid.start_hub()
    log = os.path.join(grid.tmp, "ran.log")
    gate = os.path.join(grid.tmp, "gate")
    # Each job logs that it started, waits for the gate, and prints its n.
    script = os.path.join(grid.tmp, "job.sh")
    with open(script, "w") as f:
        f.write(f'echo "start $1" >> {log}\n'
                f'while ! test -e {gate}; do sleep 0.05; done\n'
                f'echo "job $1"\n')
    w = grid.start_worker(slots=2)
    cmds = b"".join(b"sh %s %d\n" % (script.encode(), i) for i in range(12))
    r = grid.run("gridsub", "-", input=cmds)
    ids = r.stdout.decode().split()
    assert r.returncode == 0 and len(ids) == 12
    wait_until(lambda: os.path.exists(log) and len(open(log).readlines()) >= 2)
    assert grid.kill_hub() == -signal.SIGKILL
    grid.start_hub()                        # same port and state dir
    open(gate, "w").close()
    results = {}
    for i, jid in enumerate(ids):
        r = grid.run("gridsub", "--result", jid, timeout=60)
        assert r.returncode == 0, r.stderr
        results[jid] = r.stdout
    assert [results[j] for j in ids] == [b"job %d\n" % i for i in range(12)]
    # Collected once: a second collection finds nothing.
    assert all(grid.run("gridsub", "--result", j).returncode == 65 for j in ids[:3])
    assert w.poll() is None, "the worker should have reconnected, not exited"


def test_worker_kill_9_durable_job_lost_or_requeued(grid):
    grid.start_hub()
    w = grid.start_worker(slots=2, name="doomed")
    pidf = os.path.join(grid.tmp, "p")
    r = grid.run("gridsub", "-", input=f"echo $$ >> {pidf}; exec sleep 30\n".encode() * 1)
    lost_id = r.stdout.decode().strip()
    r = grid.run("gridsub", "--retries", "1", f"test -e {pidf}.2 && echo again || "
                 f"{{ touch {pidf}.2; echo $$ >> {pidf}; exec sleep 30; }}")
    kept_id = r.stdout.decode().strip()
    wait_until(lambda: os.path.exists(pidf) and len(open(pidf).read().split()) == 2)
    pids = [int(x) for x in open(pidf).read().split()]
    w.kill()
    grid.start_worker(slots=1, name="rescue")
    r = grid.run("gridsub", "--result", lost_id)
    assert r.returncode == 75, r.stderr          # lost: no retry left
    r = grid.run("gridsub", "--result", kept_id)
    assert (r.stdout, r.returncode) == (b"again\n", 0)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_cancel_a_queued_durable_job(grid):
    grid.start_hub()
    jid = grid.run("gridsub", "true").stdout.decode().strip()
    r = grid.run("gridd", "ctl", "--hub", grid.addr, "cancel", jid)
    assert r.returncode == 0, r.stderr
    r = grid.run("gridsub", "--result", jid)
    assert r.returncode == 143


def test_wait_streams_output_as_it_comes(grid):
    grid.start_hub()
    grid.start_worker()
    gate = os.path.join(grid.tmp, "gate")
    p = subprocess.Popen([*tool("gridsub"), "--wait",
                          f"echo first; while ! test -e {gate}; do sleep 0.05; done; echo second"],
                         stdout=subprocess.PIPE, env=clean_env(GRID_HUB=grid.addr))
    assert p.stdout.readline() == b"first\n"      # before the job has finished
    open(gate, "w").close()
    assert p.stdout.read() == b"second\n"
    assert p.wait(15) == 0


def test_large_output_is_stored_and_collected_whole(grid):
    grid.start_hub()
    grid.start_worker()
    r = grid.run("gridsub", "--wait", "head -c 30000000 /dev/zero | tr '\\0' x; echo")
    assert r.returncode == 0 and len(r.stdout) == 30000001 and r.stdout.count(b"x") == 30000000


def test_uncollected_results_expire(grid):
    grid.start_hub()
    grid.start_worker()
    jid = grid.run("gridsub", "echo", "old").stdout.decode().strip()
    grid.wait_for(lambda s: s["done"] == 1, "status")
    grid.hub.send_signal(signal.SIGTERM)
    assert grid.hub.wait(15) == 0
    grid.start_hub("--keep", "0.001")
    r = grid.run("gridsub", "--result", jid)
    assert r.returncode == 65, r.stderr
    assert b"1 uncollected result expired" in open(grid.hub.logpath, "rb").read()


def counted_try(grid, name, then="exit 3"):
    """A command that logs each try, prints `out N` for try N, then runs
    `then`; and the log, whose length is the number of tries so far."""
    log = os.path.join(grid.tmp, name)
    return f"echo try >> {log}; n=$(wc -l < {log}); echo out $n; echo err $n >&2; {then}", log


def test_retries_keep_exactly_the_last_try_output(grid):
    grid.start_hub()
    grid.start_worker()
    cmd, _ = counted_try(grid, "a")
    r = grid.run("gridsub", "--retries", "2", "--wait", cmd)
    assert (r.stdout, r.stderr, r.returncode) == (b"out 3\n", b"err 3\n", 3)
    cmd, _ = counted_try(grid, "b")
    jid = grid.run("gridsub", "--retries", "2", cmd).stdout.decode().strip()
    r = grid.run("gridsub", "--result", jid)
    assert (r.stdout, r.stderr, r.returncode) == (b"out 3\n", b"err 3\n", 3)


def test_retries_last_try_is_followed_live(grid):
    """With --retries the output appears when the last try starts."""
    grid.start_hub()
    grid.start_worker()
    gate = os.path.join(grid.tmp, "gate")
    cmd, _ = counted_try(grid, "a", f"test $n = 1 && exit 1; "
                                   f"while ! test -e {gate}; do sleep 0.05; done; echo done")
    p = subprocess.Popen([*tool("gridsub"), "--wait", "--retries", "1", cmd],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         env=clean_env(GRID_HUB=grid.addr))
    assert p.stdout.readline() == b"out 2\n"      # the last try, before it ends
    open(gate, "w").close()
    assert p.stdout.read() == b"done\n"
    assert p.wait(15) == 0


def test_last_try_output_across_a_hub_restart(grid):
    """The hub is killed while a job with retries is in its second try: the
    result, collected after a restart, holds only the very last try's
    output (a restart does not count as a try: 2 before, 3 after)."""
    grid.start_hub()
    grid.start_worker()
    gate = os.path.join(grid.tmp, "gate")
    cmd, log = counted_try(grid, "a", f"test $n -ge 2 && while ! test -e {gate}; "
                                      f"do sleep 0.05; done; exit 3")
    jid = grid.run("gridsub", "--retries", "2", cmd).stdout.decode().strip()
    assert wait_until(lambda: os.path.exists(log) and len(open(log).readlines()) == 2)
    assert grid.kill_hub() == -signal.SIGKILL
    grid.start_hub()
    # Collect while the first try after the restart (try 3) waits at the gate.
    assert wait_until(lambda: len(open(log).readlines()) == 3)
    p = subprocess.Popen([*tool("gridsub"), "--result", jid], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=clean_env(GRID_HUB=grid.addr))
    grid.wait_for(lambda s: s["clients"] == 2, "status")    # it, and this question
    open(gate, "w").close()
    out, err = p.communicate(timeout=30)
    assert (out, err, p.returncode) == (b"out 5\n", b"err 5\n", 3)
    assert len(open(log).readlines()) == 5


def said_ids(stderr):
    """The job ids gridsub said on stderr."""
    return [int(m) for m in re.findall(rb"^gridsub: job (\d+) queued$", stderr, re.M)]


def waiting(grid, *args):
    return subprocess.Popen([*tool("gridsub"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=clean_env(GRID_HUB=grid.addr))


def running_durable_ids(grid):
    return [int(j["id"]) for j in grid.ctl("jobs") if j["kind"] == "durable"]


def test_wait_reconnects_after_a_hub_restart_and_writes_each_byte_once(grid):
    """kill -9 of the hub while --wait streams a job: gridsub says the id,
    calls the hub again, and the job (run again after the restart) adds
    only what was not written yet."""
    grid.start_hub()
    grid.start_worker()
    gate = os.path.join(grid.tmp, "gate")
    p = waiting(grid, "--wait", f"echo first; echo to-err >&2; "
                                f"while ! test -e {gate}; do sleep 0.05; done; echo second")
    assert p.stdout.readline() == b"first\n"
    [jid] = running_durable_ids(grid)
    assert grid.kill_hub() == -signal.SIGKILL
    grid.start_hub()
    open(gate, "w").close()
    out, err = p.communicate(timeout=60)
    assert (out, p.returncode) == (b"second\n", 0), err
    assert said_ids(err) == [jid]
    assert b"lost the hub while waiting for job %d" % jid in err
    assert err.count(b"to-err\n") == 1
    r = grid.run("gridsub", "--result", str(jid))
    assert r.returncode == 65                   # collected once, and forgotten


def test_wait_across_a_restart_with_retries_prints_the_last_try_once(grid):
    grid.start_hub()
    grid.start_worker()
    gate = os.path.join(grid.tmp, "gate")
    cmd, log = counted_try(grid, "a", f"test $n -ge 2 && while ! test -e {gate}; "
                                      f"do sleep 0.05; done; exit 3")
    p = waiting(grid, "--wait", "--retries", "2", cmd)
    assert wait_until(lambda: os.path.exists(log) and len(open(log).readlines()) == 2)
    assert grid.kill_hub() == -signal.SIGKILL
    grid.start_hub()
    open(gate, "w").close()
    out, err = p.communicate(timeout=60)
    assert (out, p.returncode) == (b"out 5\n", 3), err
    assert [line for line in err.splitlines() if line.startswith(b"err")] == [b"err 5"]
    assert len(said_ids(err)) == 1


def test_wait_outlives_a_hub_drain_and_restart(grid):
    """The hub drains (SIGTERM) while the job is still queued: gridsub used
    to exit 69; now it waits for the hub to come back and the job to run."""
    grid.start_hub()
    p = waiting(grid, "--wait", "echo", "ran")
    grid.wait_for(lambda s: s["durable"] == 1, "status")
    grid.hub.send_signal(signal.SIGTERM)
    assert grid.hub.wait(15) == 0
    grid.start_hub()
    grid.start_worker()
    out, err = p.communicate(timeout=60)
    assert (out, p.returncode) == (b"ran\n", 0), err
    assert len(said_ids(err)) == 1 and b"lost the hub" in err


def test_a_try_that_wrote_otherwise_after_a_restart_is_reported(grid):
    grid.start_hub()
    grid.start_worker()
    gate = os.path.join(grid.tmp, "gate")
    cmd, log = counted_try(grid, "a", f"while ! test -e {gate}; do sleep 0.05; done")
    p = waiting(grid, "--wait", cmd)
    assert p.stdout.readline() == b"out 1\n"
    assert grid.kill_hub() == -signal.SIGKILL
    grid.start_hub()
    assert wait_until(lambda: len(open(log).readlines()) == 2)
    open(gate, "w").close()
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0 and out == b""     # "out 2" is as long as "out 1"
    assert b"wrote other output than its interrupted try had" in err


def test_reconnect_0_gives_up_at_once_and_says_the_id(grid):
    grid.start_hub()
    p = waiting(grid, "--wait", "--reconnect", "0", "echo", "later")
    grid.wait_for(lambda s: s["durable"] == 1, "status")
    assert grid.kill_hub() == -signal.SIGKILL
    out, err = p.communicate(timeout=30)
    assert p.returncode == 69 and out == b"", err
    [jid] = said_ids(err)
    grid.start_hub()
    grid.start_worker()
    r = grid.run("gridsub", "--result", str(jid))
    assert (r.stdout, r.returncode) == (b"later\n", 0)
    r = grid.run("gridsub", "-v", "--wait", "true")
    assert r.returncode == 0 and len(said_ids(r.stderr)) == 1
    r = grid.run("gridsub", "--reconnect", "-1", "true")
    assert r.returncode == 64


def test_stopped_while_waiting_says_the_id(grid):
    grid.start_hub()
    p = waiting(grid, "--wait", "echo", "x")
    grid.wait_for(lambda s: s["durable"] == 1 and s["clients"] == 2, "status")
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 143 and len(said_ids(err)) == 1, err


def test_list_shows_the_jobs_nobody_collected(grid):
    """A script that lost an id finds it: gridsub --list and gridd ctl
    results list queued, running and done jobs until they are collected."""
    grid.start_hub()
    grid.start_worker()
    gate = os.path.join(grid.tmp, "gate")
    done = grid.run("gridsub", "echo done; exit 3").stdout.decode().strip()
    grid.wait_for(lambda s: s["done"] == 1, "status")
    running = grid.run("gridsub", f"while ! test -e {gate}; do sleep 0.05; done").stdout
    queued = grid.run("gridsub", "--require", "site=nowhere", "echo", "waits").stdout
    running, queued = running.decode().strip(), queued.decode().strip()
    grid.wait_for(lambda s: s["running"] == 1, "status")
    r = grid.run("gridsub", "--list", "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(str(j["id"]), j["state"], j["outcome"], j["exit"]) for j in rows] == [
        (done, "done", "failed", 3), (running, "running", None, None),
        (queued, "queued", None, None)]
    assert rows[2]["command"] == "echo waits" and rows[0]["tries"] == 1
    r = grid.run("gridsub", "--list")
    lines = r.stdout.decode().splitlines()
    assert lines[0].split() == ["ID", "STATE", "AGE", "TRIES", "RESULT", "COMMAND"]
    row = re.compile(r"\s*(\d+)  (\w+) +\d+s +(\d+)  (exit 3|-) +(.*)")
    assert [row.fullmatch(line).groups() for line in lines[1:]] == [
        (done, "done", "1", "exit 3", "echo done; exit 3"),
        (running, "running", "1", "-", f"while ! test -e {gate}; do sleep 0.05; done"),
        (queued, "queued", "0", "-", "echo waits")]
    r = grid.run("gridd", "ctl", "--hub", grid.addr, "--json", "results")
    assert [str(j["id"]) for j in json.loads(r.stdout)] == [done, running, queued]
    r = grid.run("gridd", "ctl", "--hub", grid.addr, "results")
    assert r.returncode == 0 and r.stdout.decode().split("\n")[1].split()[:2] == [done, "done"]
    open(gate, "w").close()
    assert grid.run("gridsub", "--result", done).returncode == 3
    assert grid.run("gridsub", "--result", running).returncode == 0
    r = grid.run("gridsub", "--list", "--json")
    assert [json.loads(line)["id"] for line in r.stdout.splitlines()] == [int(queued)]
    for args in (["--list", "true"], ["--list", "--wait"], ["--json", "true"]):
        assert grid.run("gridsub", *args).returncode == 64, args


def test_dash_submits_a_long_input_in_batches(grid):
    """More lines than one batch: every non-blank line is one job, ids in
    the order of the lines."""
    grid.start_hub()
    lines = b"".join(b"echo %d\n" % i + (b"\n" if i % 7 == 0 else b"") for i in range(2500))
    r = grid.run("gridsub", "-", input=lines)
    assert r.returncode == 0, r.stderr
    ids = [int(x) for x in r.stdout.split()]
    assert len(ids) == 2500 and ids == sorted(set(ids))
    r = grid.run("gridsub", "--list", "--json")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [j["command"] for j in rows] == [f"echo {i}" for i in range(2500)]


def test_dash_refuses_a_line_past_the_longest_command(grid):
    from gridtools.cli.gridsub import MAX_COMMAND
    grid.start_hub()
    grid.start_worker()
    longest = b"echo " + b"x" * (MAX_COMMAND - 5)
    r = grid.run("gridsub", "--wait", "-", input=b"echo a\n" + longest + b"\n")
    assert (r.returncode, r.stdout) == (0, b"a\n" + longest[5:] + b"\n"), r.stderr
    r = grid.run("gridsub", "-", input=b"echo a\n\necho b\n" + longest + b"y\necho c\n")
    assert r.returncode == 65
    assert r.stderr == (b"gridsub: error: standard input, line 4: a command longer than "
                        b"%d bytes (the most one job takes)\n" % MAX_COMMAND)
    ids = r.stdout.split()
    assert len(ids) == 2                        # the lines before it are queued
    assert [grid.run("gridsub", "--result", i).stdout for i in ids] == [b"a\n", b"b\n"]
    r = grid.run("gridsub", "echo", "x" * MAX_COMMAND)
    assert r.returncode == 64


def test_dash_submits_each_batch_before_the_input_ends(grid):
    """gridsub - holds one batch of lines, not all of its input: the first
    batch's ids come out while stdin is still open."""
    import select
    from gridtools.cli.gridsub import BATCH_LINES
    grid.start_hub()
    p = subprocess.Popen([*tool("gridsub"), "-"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, env=clean_env(GRID_HUB=grid.addr))
    p.stdin.write(b"true\n" * BATCH_LINES)
    p.stdin.flush()
    out = b""
    deadline = time.monotonic() + 60            # a bound on failure, not a measurement
    while out.count(b"\n") < BATCH_LINES and time.monotonic() < deadline:
        if select.select([p.stdout], [], [], 1)[0]:
            data = os.read(p.stdout.fileno(), 1 << 16)
            if not data:
                break
            out += data
    assert out.count(b"\n") == BATCH_LINES and p.poll() is None
    p.stdin.write(b"true\n")
    p.stdin.close()
    assert p.wait(30) == 0 and len((out + p.stdout.read()).split()) == BATCH_LINES + 1
