"""gridmap failure handling: exit statuses, --retries, --timeout (the whole
process group dies), --halt, --joblog and --json records."""

import base64
import json
import os

import pytest

from conftest import run_gridmap

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
    # gridmap(1): Exitval is -1 for a job killed by a signal.
    assert joblog_rows(log)[0][6:8] == ["-1", "9"]


# -- retries ---------------------------------------------------------------

def counting_job(tmp_path, succeed_at):
    """A job that fails until its try number reaches succeed_at, printing
    which try it is on stdout and stderr."""
    c = tmp_path / "count"
    return (f": {{}}; echo x >> {c}; n=$(wc -l < {c}); echo out$n; echo err$n >&2; "
            f"[ $n -ge {succeed_at} ]")


def test_retries_print_only_the_last_try(tmp_path):
    log = tmp_path / "log"
    p = run_gridmap(["--retries", "2", "--joblog", str(log), counting_job(tmp_path, 3),
                     ":::", "a"])
    assert (p.returncode, p.stdout, p.stderr) == (0, b"out3\n", b"err3\n")
    assert len(joblog_rows(log)) == 1 and joblog_rows(log)[0][6] == "0"


def test_retries_exhausted(tmp_path):
    p = run_gridmap(["--retries", "1", "--json", counting_job(tmp_path, 3), ":::", "a"])
    assert p.returncode == 1
    [rec] = [json.loads(line) for line in p.stdout.splitlines()]
    assert (rec["tries"], rec["status"], rec["exit"], rec["stdout"], rec["stderr"]) == \
        (2, "failed", 1, "out2\n", "err2\n")
    assert (tmp_path / "count").read_text().count("x") == 2


def test_no_retries_by_default(tmp_path):
    p = run_gridmap([counting_job(tmp_path, 2), ":::", "a"])
    assert (p.returncode, p.stdout) == (1, b"out1\n")


def test_retries_keep_order_and_seq(tmp_path):
    p = run_gridmap(["-k", "-j2", "--retries", "1",
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
    assert [r[6:8] for r in rows] == [["0", "0"], ["-1", "15"], ["0", "0"]]


def test_timed_out_job_is_retried(tmp_path):
    c = tmp_path / "c"
    p = run_gridmap(["--timeout", "1", "--retries", "1",
                     f"echo >> {c}; [ $(wc -l < {c}) -ge 2 ] || sleep 30; echo done {{}}",
                     ":::", "x"])
    assert (p.returncode, p.stdout) == (0, b"done x\n")


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
    assert (p.returncode, p.stdout) == (5, b"0\n3\n0\n5\n")


def test_halt_success(tmp_path):
    p = run_gridmap(["-j1", "--halt", "now,success=1", "echo {}; exit {}"],
                    input=b"3\n0\n4\n")
    assert (p.returncode, p.stdout) == (0, b"3\n0\n")


def test_halt_done(tmp_path):
    p = run_gridmap(["-j1", "--halt", "soon,done=2", "echo {}; exit {}"],
                    input=b"3\n0\n4\n")
    assert (p.returncode, p.stdout) == (1, b"3\n0\n")


def test_halt_fail_percent(tmp_path):
    # Judged once three jobs have ended: 2 of 4 is 50 %.
    p = run_gridmap(["-j1", "--halt", "now,fail=50%", "echo {}; exit {}"],
                    input=b"0\n0\n3\n4\n5\n6\n")
    assert (p.returncode, p.stdout) == (4, b"0\n0\n3\n4\n")


def test_halt_shorthand(tmp_path):
    p = run_gridmap(["-j1", "--halt", "2", "echo {}; exit {}"], input=b"0\n7\n0\n")
    assert (p.returncode, p.stdout) == (7, b"0\n7\n")
    p = run_gridmap(["-j1", "--halt", "0", "echo {}; exit {}"], input=b"0\n7\n0\n")
    assert (p.returncode, p.stdout) == (1, b"0\n7\n0\n")


def test_no_retry_after_halt(tmp_path):
    p = run_gridmap(["-j1", "--retries", "3", "--halt", "now,fail=1", "--json",
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
    os.unlink(f)
    run_gridmap(["-j2", "--joblog", str(log)], input=jobs.encode())
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
    assert base64.b64decode(rec["stdout_base64"]) == b"\xff\xfe"
    assert os.fsencode(rec["input"][0]) == b"\xfe"
    assert p.stdout.isascii()
