"""gridmap failure handling: exit statuses, --retries, --timeout (the whole
process group dies), --halt, --joblog and --json records."""

import base64
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import run_gridmap
from hubfixtures import clean_env, grid, tool, wait_until  # noqa: F401
from gridtools.io.loop import Loop
from gridtools.local import jobs, pool
from gridtools.local.template import Template

WAIT_FOR = 'i=0; while [ ! -e "{f}" ]; do i=$((i+1)); [ $i -gt 400 ] && exit 99; sleep 0.05; done'


def procs_with(marker):
    """Processes whose command line contains marker."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if marker.encode() in cmd:
            found.append((int(pid), cmd))
    return found


def joblog_rows(path):
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == ["Seq", "Host", "Starttime", "JobRuntime", "Send",
                                    "Receive", "Exitval", "Signal", "Command"]
    return [line.split("\t") for line in lines[1:]]


# -- exit status -----------------------------------------------------------

@pytest.mark.parametrize("failing,total,status", [
    (0, 5, 0), (3, 5, 3), (100, 100, 100), (101, 103, 101), (150, 150, 101),
])
def test_exit_status_counts_failed_jobs(failing, total, status):
    data = b"false\n" * failing + b"true\n" * (total - failing)
    p = run_gridmap(["-j4"], input=data)
    assert p.returncode == status


def test_a_job_killed_by_a_signal_fails(tmp_path):
    log = tmp_path / "log"
    p = run_gridmap(["--joblog", str(log), "--json", "kill -9 $$; : {}", ":::", "x"])
    assert p.returncode == 1
    [rec] = [json.loads(line) for line in p.stdout.splitlines()]
    assert (rec["status"], rec["exit"], rec["signal"]) == ("signal", None, 9)
    # As GNU parallel writes it: Exitval 0 and the signal.
    assert joblog_rows(log)[0][6:8] == ["0", "9"]


# -- retries ---------------------------------------------------------------

def counting_job(tmp_path, succeed_at):
    """A job that fails until its try number reaches succeed_at, printing
    which try it is on stdout and stderr."""
    c = tmp_path / "count"
    return (f": {{}}; echo x >> {c}; n=$(wc -l < {c}); echo out$n; echo err$n >&2; "
            f"[ $n -ge {succeed_at} ]")


def test_retries_print_only_the_last_try(tmp_path):
    log = tmp_path / "log"
    p = run_gridmap(["--retries", "3", "--joblog", str(log), counting_job(tmp_path, 3),
                     ":::", "a"])
    assert (p.returncode, p.stdout, p.stderr) == (0, b"out3\n", b"err3\n")
    assert len(joblog_rows(log)) == 1 and joblog_rows(log)[0][6] == "0"


def test_retries_exhausted(tmp_path):
    p = run_gridmap(["--retries", "2", "--json", counting_job(tmp_path, 3), ":::", "a"])
    assert p.returncode == 1
    [rec] = [json.loads(line) for line in p.stdout.splitlines()]
    assert (rec["tries"], rec["status"], rec["exit"], rec["stdout"], rec["stderr"]) == \
        (2, "failed", 1, "out2\n", "err2\n")
    assert (tmp_path / "count").read_text().count("x") == 2


def test_no_retries_by_default(tmp_path):
    p = run_gridmap([counting_job(tmp_path, 2), ":::", "a"])
    assert (p.returncode, p.stdout) == (1, b"out1\n")


def test_retries_keep_order_and_seq(tmp_path):
    p = run_gridmap(["-k", "-j2", "--retries", "2",
                     f"[ -e {tmp_path}/{{}} ] && echo {{#}}:{{}}; touch {tmp_path}/{{}}; "
                     f"[ -e {tmp_path}/{{}}.ok ] || {{ touch {tmp_path}/{{}}.ok; exit 1; }}",
                     ":::", "a", "b", "c"])
    assert (p.returncode, p.stdout) == (0, b"1:a\n2:b\n3:c\n")


# -- timeout -----------------------------------------------------------------

def test_timeout_kills_the_whole_process_group(tmp_path):
    marker = f"27{os.getpid()}.5"
    p = run_gridmap(["--timeout", "1", "--json",
                     f"sh -c 'sleep {marker}' & sleep {marker}; : {{}}", ":::", "x"])
    assert p.returncode == 1
    [rec] = [json.loads(line) for line in p.stdout.splitlines()]
    assert (rec["status"], rec["signal"]) == ("timeout", 15)
    assert procs_with(marker) == []


def test_timeout_then_sigkill_for_a_job_ignoring_sigterm(tmp_path):
    p = run_gridmap(["--timeout", "0.5", "--json",
                     "trap '' TERM; while :; do sleep 0.1; done; : {}", ":::", "x"])
    [rec] = [json.loads(line) for line in p.stdout.splitlines()]
    assert (p.returncode, rec["status"], rec["signal"]) == (1, "timeout", 9)


def test_timeout_only_hits_slow_jobs(tmp_path):
    log = tmp_path / "log"
    p = run_gridmap(["-k", "--timeout", "2", "--joblog", str(log), "sleep", "{}"],
                    input=b"0\n30\n0.1\n")
    assert p.returncode == 1
    rows = joblog_rows(log)
    assert [r[6:8] for r in rows] == [["0", "0"], ["0", "15"], ["0", "0"]]


def test_timed_out_job_is_retried(tmp_path):
    c = tmp_path / "c"
    p = run_gridmap(["--timeout", "1", "--retries", "2",
                     f"echo >> {c}; [ $(wc -l < {c}) -ge 2 ] || sleep 30; echo done {{}}",
                     ":::", "x"])
    assert (p.returncode, p.stdout) == (0, b"done x\n")


def test_every_timed_out_try_is_warned_of():
    # As GNU parallel warns of each job its timeout killed; a try that
    # fails otherwise, or succeeds, says nothing.
    p = run_gridmap(["-k", "--timeout", "0.5", "--retries", "2", "sleep {}; exit 3",
                     ":::", "30", "0"])
    assert p.returncode == 2
    assert p.stderr.decode().splitlines() == [
        "gridmap: warning: job 1 timed out after 0.5s and was killed: sleep 30; exit 3"] * 2


def test_no_warning_without_a_timeout():
    p = run_gridmap(["--timeout", "30", "exit {}", ":::", "0", "1"])
    assert (p.returncode, p.stderr) == (1, b"")


def test_timeout_and_lost_warnings_through_a_hub(grid):
    grid.start_hub()
    w = grid.start_worker(slots=2, name="vanishing")
    sleeper = f"echo $$ > {grid.tmp}/{{}}.pid; exec sleep 30"
    p = subprocess.Popen([*tool("gridmap"), "--hub", grid.addr, "-k", "--json", sleeper,
                          ":::", "j1", "j2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=clean_env(), cwd=grid.tmp)
    pids = [int(wait_until(lambda: _read(f"{grid.tmp}/j{i}.pid"))) for i in (1, 2)]
    w.kill()
    out, err = p.communicate(timeout=30)
    for pid in pids:
        _kill(pid)
    assert [json.loads(x)["status"] for x in out.splitlines()] == ["lost", "lost"]
    assert sorted(err.decode().splitlines()) == [
        f"gridmap: warning: job {i} lost (worker vanishing vanished): "
        f"{sleeper.replace('{}', f'j{i}')}" for i in (1, 2)]
    grid.start_worker(slots=1, name="slow")
    r = grid.run("gridmap", "--timeout", "0.5", "sleep", ":::", "30")
    assert r.returncode == 1
    assert r.stderr == b"gridmap: warning: job 1 timed out after 0.5s and was killed: sleep 30\n"


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# -- halt --------------------------------------------------------------------

def test_halt_now_kills_running_jobs_and_starts_no_more(tmp_path):
    marker = f"28{os.getpid()}.5"
    jobs = f"sleep {marker}\nexit 3\ntouch {tmp_path}/started\n"
    p = run_gridmap(["-j2", "--json", "--halt", "now,fail=1"], input=jobs.encode())
    assert p.returncode == 3
    recs = {r["seq"]: r for r in map(json.loads, p.stdout.splitlines())}
    assert (recs[1]["status"], recs[2]["status"]) == ("cancelled", "failed")
    assert 3 not in recs
    assert not (tmp_path / "started").exists()
    assert procs_with(marker) == []
    assert b"halting" in p.stderr


def test_halt_soon_lets_running_jobs_finish(tmp_path):
    f = tmp_path / "flag"
    jobs = f"{WAIT_FOR.format(f=f)}; echo finished\ntouch {f}; exit 4\ntouch {tmp_path}/started\n"
    p = run_gridmap(["-j2", "--halt", "soon,fail=1"], input=jobs.encode())
    assert p.returncode == 4
    assert p.stdout == b"finished\n"
    assert not (tmp_path / "started").exists()


def test_halt_fail_count(tmp_path):
    p = run_gridmap(["-j1", "--halt", "soon,fail=2", "echo {}; exit {}"],
                    input=b"0\n3\n0\n5\n0\n")
    # As GNU parallel: fail=N (N > 1) exits with the number of failures.
    assert (p.returncode, p.stdout) == (2, b"0\n3\n0\n5\n")


def test_halt_success(tmp_path):
    p = run_gridmap(["-j1", "--halt", "now,success=1", "echo {}; exit {}"],
                    input=b"3\n0\n4\n")
    assert (p.returncode, p.stdout) == (0, b"3\n0\n")


def test_halt_done(tmp_path):
    p = run_gridmap(["-j1", "--halt", "soon,done=2", "echo {}; exit {}"],
                    input=b"3\n0\n4\n")
    assert (p.returncode, p.stdout) == (1, b"3\n0\n")


def test_halt_fail_percent(tmp_path):
    # As GNU parallel: 50 % of all six jobs is three; the exit status is
    # the percentage of all jobs that failed.
    p = run_gridmap(["-j1", "--halt", "now,fail=50%", "echo {}; exit {}"],
                    input=b"0\n0\n3\n4\n5\n6\n")
    assert (p.returncode, p.stdout) == (50, b"0\n0\n3\n4\n5\n")


def test_halt_shorthand(tmp_path):
    p = run_gridmap(["-j1", "--halt", "2", "echo {}; exit {}"], input=b"0\n7\n0\n")
    assert (p.returncode, p.stdout) == (7, b"0\n7\n")
    p = run_gridmap(["-j1", "--halt", "0", "echo {}; exit {}"], input=b"0\n7\n0\n")
    assert (p.returncode, p.stdout) == (1, b"0\n7\n0\n")


def test_no_retry_after_halt(tmp_path):
    p = run_gridmap(["-j1", "--retries", "4", "--halt", "now,fail=1", "--json",
                     "exit 2; : {}", ":::", "a"])
    # Retries come first: the job is tried 4 times, then the run halts.
    [rec] = [json.loads(line) for line in p.stdout.splitlines()]
    assert (p.returncode, rec["tries"]) == (2, 4)


# -- joblog and json ---------------------------------------------------------

def test_joblog_to_stdout_and_columns():
    p = run_gridmap(["-k", "--joblog", "-", "echo", ":::", "a", "c\nd"])
    lines = p.stdout.split(b"\n")
    assert lines[0].startswith(b"Seq\tHost\tStarttime")
    rows = [line.split(b"\t") for line in p.stdout.splitlines()
            if line.split(b"\t")[0].isdigit()]
    assert [r[0] for r in rows] == [b"1", b"2"]
    assert [r[5] for r in rows] == [b"2", b"4"]       # Receive: bytes of stdout
    assert rows[1][8] == b"echo 'c d'"                # newline shown as a space


def test_joblog_cannot_be_created(tmp_path):
    p = run_gridmap(["--joblog", str(tmp_path / "no" / "log"), "true", ":::", "a"])
    assert p.returncode == 73
    assert p.stderr.startswith(b"gridmap: error:")


def test_joblog_keep_order(tmp_path):
    log = tmp_path / "log"
    f = tmp_path / "flag"
    jobs = f"{WAIT_FOR.format(f=f)}\ntouch {f}\n"
    run_gridmap(["-k", "-j2", "--joblog", str(log)], input=jobs.encode())
    assert [r[0] for r in joblog_rows(log)] == ["1", "2"]
    # Without -k, lines come as jobs end: job 1 ends only once job 2's line
    # is in the log (a flag file would leave both ending in one batch under
    # load, in either order).
    logged = 'i=0; while [ "$(wc -l < "{f}")" -lt 2 ]; do i=$((i+1)); [ $i -gt 400 ] && ' \
             'exit 99; sleep 0.05; done'.format(f=log)
    run_gridmap(["-j2", "--joblog", str(log)], input=f"{logged}\ntrue\n".encode())
    assert [r[0] for r in joblog_rows(log)] == ["2", "1"]


def test_json_records():
    p = run_gridmap(["-k", "--json", "echo o{}; echo e >&2; exit {}", ":::", "0", "3"])
    assert p.returncode == 1
    recs = [json.loads(line) for line in p.stdout.splitlines()]
    assert [(r["seq"], r["input"], r["status"], r["exit"], r["signal"], r["stdout"],
             r["stderr"], r["tries"], r["host"]) for r in recs] == [
        (1, ["0"], "ok", 0, None, "o0\n", "e\n", 1, ":"),
        (2, ["3"], "failed", 3, None, "o3\n", "e\n", 1, ":")]
    assert recs[0]["command"] == "echo o0; echo e >&2; exit 0"
    assert all(isinstance(r["start"], float) and r["runtime"] >= 0 for r in recs)
    assert p.stderr == b""


def test_json_non_utf8():
    p = run_gridmap(["--json", "printf", "'\\377'{}"], input=b"\xfe\n")
    [rec] = [json.loads(line) for line in p.stdout.splitlines()]
    assert (rec["stdout"], base64.b64decode(rec["stdout_base64"])) == ("\ufffd\ufffd", b"\xff\xfe")
    assert (rec["input"], rec["input_base64"]) == (["\ufffd"], ["/g=="])
    assert base64.b64decode(rec["command_base64"]) == b"printf '\\377''\xfe'"
    assert p.stdout.isascii()


def test_json_utf8_has_no_base64_companions():
    p = run_gridmap(["-k", "--json", "echo", ":::", "\u00e9t\u00e9", "x"])
    for rec in (json.loads(line) for line in p.stdout.splitlines()):
        assert not [k for k in rec if k.endswith("_base64")], rec
    assert json.loads(p.stdout.splitlines()[0])["stdout"] == "\u00e9t\u00e9\n"


# A consumer that insists on valid Unicode: a lone surrogate (\udcff) in the
# JSON fails it, as it fails jq and any strict UTF-8 decoder.
STRICT_READER = ("import json, sys\n"
                 "for line in sys.stdin:\n"
                 "    json.dumps(json.loads(line), ensure_ascii=False).encode('utf-8')\n"
                 "print('ok')\n")


def test_json_with_undecodable_bytes_is_valid_unicode():
    # Bytes that are not UTF-8 in an input, its command, stdout and stderr.
    printf = subprocess.run(["sh", "-c", r"printf 'a\377b\nok\n'"], capture_output=True)
    assert printf.stdout == b"a\xffb\nok\n"
    p = run_gridmap(["-k", "--json", 'printf "%s\\n" {}; printf "\\376" >&2'],
                    input=printf.stdout)
    assert p.returncode == 0, p.stderr
    bad, good = [json.loads(line) for line in p.stdout.splitlines()]
    for field, exact in (("stdout", b"a\xffb\n"), ("stderr", b"\xfe")):
        assert bad[field] == exact.decode("utf-8", "replace")
        assert base64.b64decode(bad[field + "_base64"]) == exact
    assert bad["input"] == ["a\ufffdb"]
    assert [base64.b64decode(x) for x in bad["input_base64"]] == [b"a\xffb"]
    assert base64.b64decode(bad["command_base64"]) == b'printf "%s\\n" \'a\xffb\'; printf "\\376" >&2'
    assert (good["stdout"], good["input"]) == ("ok\n", ["ok"])
    assert "stdout_base64" not in good and "input_base64" not in good
    strict = subprocess.run([sys.executable, "-c", STRICT_READER], input=p.stdout,
                            capture_output=True)
    assert strict.stdout == b"ok\n", strict.stderr
    # The old encoding (a lone surrogate) is what the strict reader refuses.
    old = json.dumps({"input": [os.fsdecode(b"a\xffb")]}).encode() + b"\n"
    assert subprocess.run([sys.executable, "-c", STRICT_READER], input=old,
                          capture_output=True).returncode != 0
    jq = shutil.which("jq")
    if jq is None:
        print("jq is not installed: the jq round trip is not checked")
        return
    r = subprocess.run([jq, "-c", "."], input=p.stdout, capture_output=True)
    assert r.returncode == 0, r.stderr
    assert [json.loads(line) for line in r.stdout.splitlines()] == [bad, good]


# -- every job gets exactly one result ---------------------------------------

class ScriptedExecutor:
    """An executor that runs nothing: each start() wakes the pool's loop,
    and each wake-up plays the next scripted step, which reports jobs done
    in an order a test chooses (real exits in one select() batch can come
    in any order)."""

    def __init__(self, capacity, loop, steps):
        self.capacity = capacity
        self.loop = loop
        self.steps = list(steps)
        self.started = []
        self.pool = None
        self.r, self.w = os.pipe()
        loop.add_reader(self.r, self._step)

    def start(self, job):
        self.started.append((job.seq, job.tries))
        os.write(self.w, b"x")

    def _step(self):
        os.read(self.r, 1)
        if self.steps:
            self.steps.pop(0)(self.pool)

    def kill(self, job, sig):
        pass

    def close(self):
        self.loop.remove_reader(self.r)
        os.close(self.r)
        os.close(self.w)


class ListSink:
    keep_order = False
    next_seq = 1

    def __init__(self):
        self.results = []

    def attach(self, loop, on_drain):
        pass

    def pending(self):
        return 0

    def write(self, fd_no, data):
        os.write(fd_no, data)

    def add(self, r):
        self.results.append(r)

    def close(self, drop=False):
        pass


def test_a_job_waiting_for_a_retry_still_gets_its_result():
    # b's first try fails in the same batch as a's last one, which halts the
    # run: b gets no more tries, but it must still end in one result.
    def running(p, seq):
        return p.running[seq]
    steps = [lambda p: p.job_done(running(p, 1), 1, None),
             lambda p: (p.job_done(running(p, 2), 1, None), p.job_done(running(p, 1), 1, None))]
    lp = Loop()
    ex = ScriptedExecutor(2, lp, steps)
    sink = ListSink()
    opts = pool.Options(template=Template("true {}"), retries=2,
                        halt=pool.Halt("now", "fail", 1), slots=2)
    p = pool.Pool(jobs.RecordSource(jobs.IterFeed([("a",), ("b",)])), sink, opts,
                  loop=lp, executor=ex)
    ex.pool = p
    assert p.run() == 1
    assert ex.started == [(1, 1), (2, 1), (1, 2)]
    assert sorted((r.seq, r.tries, r.outcome) for r in sink.results) == \
        [(1, 2, "failed"), (2, 1, "failed")]


def test_round_robin_failures_are_counted(tmp_path):
    log = tmp_path / "log"
    p = run_gridmap(["--pipe", "--round-robin", "-j2", "--retries", "1", "--joblog", str(log),
                     "cat >/dev/null; exit 1"], input=b"1\n2\n")
    assert p.returncode == 2
    assert [r[6] for r in joblog_rows(log)] == ["1", "1"]
