"""gridmap --onall and --nonall on the real sshd of tests/sshfixtures.py,
against GNU parallel 20221122 running the same command line with the
same ssh: every job on every host, output grouped by host (with -k both
print the hosts in GNU's sorted order), --tag naming the host, and the
exit status counting the hosts where a job failed.  The two hosts are
the one sshd under two names (an ssh_config naming it gridtest and
gridtest2)."""

import shutil
import subprocess

import pytest

from hubfixtures import clean_env
from sshfixtures import sshd  # noqa: F401 (a fixture)
from test_gridmap_ssh import gridmap
from gridtools.proto import errors

HOSTS = "gridtest2,gridtest"


@pytest.fixture(name="ssh")
def ssh_command(sshd, tmp_path):
    """--ssh for both names of the test sshd."""
    text = open(sshd.config).read().replace("Host gridtest\n", "Host gridtest gridtest2\n")
    config = tmp_path / "ssh_config"
    config.write_text(text)
    return f"ssh -T -F {config}"


def parallel(*args, timeout=120):
    if shutil.which("parallel") is None:
        reason = "GNU parallel is not installed (Debian parallel)"
        print(f"skipping: {reason}")
        pytest.skip(reason)
    return subprocess.run(["parallel", "--will-cite", *args], capture_output=True,
                          env=clean_env(), timeout=timeout, stdin=subprocess.DEVNULL)


def both(ssh, *args):
    """(GNU parallel's run, gridmap's run) of the same arguments."""
    return parallel("--ssh", ssh, *args), gridmap("--ssh", ssh, *args)


def test_onall_runs_every_job_on_every_host_as_gnu_parallel(ssh):
    gnu, ours = both(ssh, "-S", HOSTS, "--onall", "-k", "echo {} $((1+{})); exit {}",
                     ":::", "0", "1", "2")
    assert ours.returncode == gnu.returncode == 2, ours.stderr
    assert ours.stdout == gnu.stdout == b"0 1\n1 2\n2 3\n" * 2


def test_onall_tag_names_the_host_in_gnus_order(ssh):
    gnu, ours = both(ssh, "-S", HOSTS, "--onall", "--tag", "-k", "echo {1}-{2}",
                     ":::", "a", "b", ":::", "x", "y")
    assert (ours.stdout, ours.returncode) == (gnu.stdout, gnu.returncode) == (gnu.stdout, 0), \
        ours.stderr
    assert ours.stdout.startswith(b"gridtest\ta-x\n")


def test_onall_without_k_groups_output_by_host(ssh):
    """GNU's order of the hosts is the order they finish in; each host's
    lines come together, in its jobs' order."""
    gnu, ours = both(ssh, "-S", HOSTS, "--onall", "--tag",
                     "echo out {}; echo err {} >&2", ":::", "a", "b", "c")
    assert ours.returncode == gnu.returncode == 0, ours.stderr
    assert sorted(ours.stdout.splitlines()) == sorted(gnu.stdout.splitlines())
    assert sorted(ours.stderr.splitlines()) == sorted(gnu.stderr.splitlines())
    for out in (ours.stdout, gnu.stdout):
        hosts = [line.split(b"\t")[0] for line in out.splitlines()]
        assert hosts in ([b"gridtest"] * 3 + [b"gridtest2"] * 3,
                         [b"gridtest2"] * 3 + [b"gridtest"] * 3)
        assert [line.split()[-1] for line in out.splitlines()] == [b"a", b"b", b"c"] * 2


def test_nonall_runs_the_command_once_on_each_host_with_no_argument(ssh):
    gnu, ours = both(ssh, "-S", HOSTS, "--nonall", "--tag", 'echo "[$#]" hi; exit 3')
    assert ours.returncode == gnu.returncode == 2, ours.stderr
    assert sorted(ours.stdout.splitlines()) == sorted(gnu.stdout.splitlines()) == \
        [b"gridtest\t[0] hi", b"gridtest2\t[0] hi"]


def test_a_host_once_and_one_at_a_time(ssh, tmp_path):
    """A host named twice runs the jobs once, and its jobs one at a time
    (GNU's per-host -j1): each job takes a lock no other may hold."""
    lock = tmp_path / "lock"
    cmd = f"mkdir {lock} || exit 9; sleep 0.2; rmdir {lock}; echo {{}}"
    gnu, ours = both(ssh, "-S", "gridtest,gridtest,4/gridtest", "--onall", "-k", cmd,
                     ":::", "1", "2", "3")
    assert (ours.stdout, ours.returncode) == (gnu.stdout, gnu.returncode), ours.stderr
    assert ours.stdout.count(b"\n") in (3, 6)


def test_onall_joblog_has_each_job_on_each_host(ssh, tmp_path):
    gnu_log, our_log = tmp_path / "gnu", tmp_path / "ours"
    gnu = parallel("--ssh", ssh, "-S", HOSTS, "--onall", "--joblog", str(gnu_log),
                   "exit {}", ":::", "0", "1")
    ours = gridmap("--ssh", ssh, "-S", HOSTS, "--onall", "--joblog", str(our_log),
                   "exit {}", ":::", "0", "1")
    assert ours.returncode == gnu.returncode == 2, ours.stderr

    def rows(path):     # Host, Exitval, Signal, Command: Seq and times differ
        lines = path.read_text().splitlines()
        return lines[0], sorted(tuple(f.split("\t")[i] for i in (1, 6, 7, 8))
                                for f in lines[1:])
    assert rows(our_log) == rows(gnu_log)
    assert len(rows(our_log)[1]) == 4


def test_an_unreachable_host_counts_as_a_failed_one(ssh):
    gnu, ours = both(ssh, "-S", "gridtest,unreachable", "--onall", "-k", "echo {}",
                     ":::", "a", "b")
    assert (ours.stdout, ours.returncode) == (gnu.stdout, gnu.returncode) == (b"a\nb\n", 1)
    assert b"unreachable" in ours.stderr


def test_onall_refuses_pipe():
    r = gridmap("-S", "h", "--onall", "--pipe", "wc -l", input=b"x\n")
    assert r.returncode == errors.USAGE and b"--onall/--nonall" in r.stderr, r.stderr


def test_without_S_the_only_host_is_this_one():
    """As GNU parallel: --onall runs each job once here, in order;
    --nonall the command once, with no argument, reading no input."""
    for args in (["--onall", "echo {}; sleep 0.$((3 - {}))", ":::", "1", "2", "3"],
                 ["--nonall", 'echo "[$#]" hi']):
        gnu = parallel(*args)
        ours = gridmap(*args)
        assert (ours.stdout, ours.stderr, ours.returncode) == \
            (gnu.stdout, gnu.stderr, gnu.returncode) != (b"", b"", 0)
