"""gridmap --sshloginfile read again during a run (GNU parallel's: when a
job ends, at most once a second), on the real sshd of tests/sshfixtures.py:
a login added joins the run, a login removed takes no new job.  The
second login is the same sshd reached through a stand-in ssh command that
sets WHO=two in the worker's environment, so a job knows where it runs,
and the joblog's Host column names the login."""

import os
import stat

from hubfixtures import clean_env
from sshfixtures import sshd  # noqa: F401 (a fixture)
from test_gridmap_ssh import gridmap, lines, ssh_args

WAIT = 600                  # tenths of a second a job waits for its sign, at most


def second_login(sshd, tmp_path):
    """An ssh command for the login "gridtest2": the test sshd, with WHO=two."""
    path = tmp_path / "ssh2"
    path.write_text("#!/bin/sh\n# $1 is the host (gridtest2); the rest the remote command\n"
                    f"shift; exec ssh -T -F {sshd.config} gridtest \"WHO=two; export WHO; $*\"\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return f"1/{path} gridtest2"


def hosts_of(joblog):
    """seq -> Host of each job in the joblog."""
    rows = [line.split("\t") for line in joblog.read_text().splitlines()[1:]]
    return {int(r[0]): r[1] for r in rows}


def test_a_login_added_mid_run_joins_it(sshd, tmp_path):
    """Job 1 adds gridtest2 to the file and ends after a second (the file
    is looked at again when a job ends, at most once a second).  The jobs
    on gridtest then wait until a job ran on gridtest2: the run can only
    end if the added login took jobs."""
    slf, sign, log = tmp_path / "hosts", tmp_path / "ran-on-two", tmp_path / "joblog"
    slf.write_text("1/gridtest\n")
    (tmp_path / "new").write_text(f"1/gridtest\n{second_login(sshd, tmp_path)}\n")
    cmd = (f"if [ {{}} = 1 ]; then mv {tmp_path}/new {slf}; sleep 1.1; "
           f"elif [ \"$WHO\" = two ]; then touch {sign}; "
           f"else i=0; while [ ! -e {sign} ] && [ $i -lt {WAIT} ]; do sleep 0.1; i=$((i+1)); "
           f"done; fi; echo {{}} ${{WHO:-one}}")
    r = gridmap(*ssh_args(sshd), "--slf", str(slf), "-k", "--joblog", str(log), cmd,
                input=lines(6))
    assert r.returncode == 0, r.stderr
    assert [line.split()[0] for line in r.stdout.splitlines()] == [b"1", b"2", b"3", b"4",
                                                                  b"5", b"6"]
    assert sign.exists(), r.stderr
    hosts = hosts_of(log)
    assert set(hosts.values()) == {"gridtest", "gridtest2"}
    # The joblog's Host is the login the job ran on (its WHO says which).
    for line in r.stdout.decode().splitlines():
        seq, who = line.split()
        assert hosts[int(seq)] == {"one": "gridtest", "two": "gridtest2"}[who]
    assert r.stderr == b""


def test_a_login_removed_mid_run_takes_no_new_job(sshd, tmp_path):
    """The first job on gridtest2 removes it from the file and ends after
    a second: at its end the file is read again, gridtest2 is drained and
    its channel closed, and every other job runs on gridtest."""
    slf, log, mark = tmp_path / "hosts", tmp_path / "joblog", tmp_path / "first-on-two"
    slf.write_text(f"1/gridtest\n{second_login(sshd, tmp_path)}\n")
    (tmp_path / "new").write_text("1/gridtest\n")
    cmd = (f"if [ \"$WHO\" = two ] && mkdir {mark} 2>/dev/null; then "
           f"mv {tmp_path}/new {slf}; sleep 1.1; fi; sleep 0.2; echo {{}} ${{WHO:-one}}")
    r = gridmap(*ssh_args(sshd), "--slf", str(slf), "-k", "--joblog", str(log), cmd,
                input=lines(12))
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 12
    assert os.path.isdir(mark)
    on_two = [seq for seq, host in hosts_of(log).items() if host == "gridtest2"]
    assert len(on_two) == 1, hosts_of(log)
    assert r.stdout.count(b" two\n") == 1
    assert r.stderr == b""


def test_an_sshloginfile_that_cannot_be_read_again_keeps_the_hosts(sshd, tmp_path):
    """Job 1 replaces the file by a line that is no sshlogin: a warning,
    and the run goes on with the hosts it had."""
    slf = tmp_path / "hosts"
    slf.write_text("2/gridtest\n")
    cmd = f"if [ {{}} = 1 ]; then echo @group/h > {slf}; sleep 1.1; fi; echo {{}}"
    r = gridmap(*ssh_args(sshd), "--slf", str(slf), "-k", cmd, input=lines(8),
                env=clean_env())
    assert (r.stdout, r.returncode) == (lines(8), 0), r.stderr
    assert b"gridmap: warning: --sshloginfile: -S: '@group/h': hostgroups (@group) " \
           b"are not supported: the hosts stay as they were" in r.stderr
