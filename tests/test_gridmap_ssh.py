"""gridmap -S/--sshlogin, --sshloginfile, --ssh: GNU parallel's sshlogins
parsed (pure, in process), the embedded hub with one ssh channel per host
run on a real sshd (tests/sshfixtures.py) and compared with a local run;
a stand-in ssh (sh runs the remote command here) only for the fast tests
of what needs no sshd: ':' beside a host, and hosts that never start."""

import re
import subprocess

import pytest

from hubfixtures import clean_env, tool
from sshfixtures import sshd  # noqa: F401 (a fixture)
from gridtools.local import sshlogin
from gridtools.local.sshlogin import Login
from gridtools.proto import errors

# An "ssh" that runs the remote command here, as sshd's shell would.
HERE = "sh -c 'exec sh -c \"$1\"'"
DEAD = "sh -c 'echo \"ssh: connect to host $0: Connection refused\" >&2; exit 255'"


def gridmap(*args, input=b"", env=None, timeout=120):
    return subprocess.run([*tool("gridmap"), *args], input=input, capture_output=True,
                          env=env or clean_env(), timeout=timeout)


def lines(n):
    return "".join(f"{i}\n" for i in range(1, n + 1)).encode()


def parse_jobs(text, cores=None):
    from gridtools.cli.gridmap import parse_jobs
    return parse_jobs(text, cores=cores or 4)


# -- sshlogins: the grammar --------------------------------------------------------

def test_a_list_splits_on_commas_and_newlines_and_keeps_escaped_commas():
    assert sshlogin.split_list("a,b\nc, d,") == ["a", "b", "c", "d"]
    assert sshlogin.split_list(r"ssh -o X=a\,b h,k") == ["ssh -o X=a,b h", "k"]
    assert sshlogin.split_list("ssh -o X=a,,b h") == ["ssh -o X=a,b h"]


@pytest.mark.parametrize("text, login", [
    ("host", Login(None, None, "host")),
    ("user@host", Login(None, None, "user@host")),
    ("8/my-8-cpu-server.example.com", Login(8, None, "my-8-cpu-server.example.com")),
    ("2/me@dual.example.net", Login(2, None, "me@dual.example.net")),
    (":", Login(None, None, ":")),
    ("16/:", Login(16, None, ":")),
    ("ssh -p 2222 server.example.net", Login(None, "ssh -p 2222", "server.example.net")),
    ("4/ssh -p 2222 quad", Login(4, "ssh -p 2222", "quad")),
    ("//usr/local/bin/myssh -p 2222 -l me hexa",
     Login(None, "/usr/local/bin/myssh -p 2222 -l me hexa".rsplit(" ", 1)[0], "hexa")),
    ("6//usr/local/bin/myssh hexa", Login(6, "/usr/local/bin/myssh", "hexa")),
])
def test_an_sshlogin_as_gnu_parallel_writes_it(text, login):
    assert sshlogin.parse(text) == login


@pytest.mark.parametrize("text, words", [
    ("@group/host", "hostgroups"), ("@g", "hostgroups"),
    ("me:secret@host", "passwords"), ("-oProxyCommand=x", "not a host"),
    ("-", "stdin"), ("0/host", "ncpus"), ("99999999/host", "ncpus"),
    ("ssh :", "takes no ssh command"), ("ssh 'h", "quotation"),
])
def test_what_is_not_an_sshlogin_is_a_usage_error(text, words):
    with pytest.raises(errors.UsageError, match=words):
        sshlogin.parse(text)


def test_files_skip_comments_and_dotdot_is_gridmaps_own():
    files = {"/f": ["# a comment", "", "  2/h1  ", "#4/h2", "h3"],
             "/cfg/gridtools/sshloginfile": ["h4"]}
    env = {"XDG_CONFIG_HOME": "/cfg", "HOME": "/home/x"}
    got = sshlogin.gather(["a,..", ":"], ["/f", ".."], env, files.__getitem__)
    assert [g.host for g in got] == ["a", "h4", ":", "h1", "h3", "h4"]
    assert got[3].ncpus == 2
    assert sshlogin.file_path(".", env) == "/etc/gridtools/sshloginfile"
    assert sshlogin.default_file({"HOME": "/home/x"}) == \
        "/home/x/.config/gridtools/sshloginfile"


def test_jobs_per_host_count_as_gnu_parallels_j():
    slots = lambda text, jobs="100%": sshlogin.slots(sshlogin.parse(text), jobs, parse_jobs)
    assert slots("host") is None                # the worker counts its own CPUs
    assert slots("3/host") == 3
    assert slots("4/host", "50%") == 2
    assert slots("host", "5") == 5
    assert slots("2/host", "5") == 5
    assert slots(":") == 4                      # this host's cores (here: parse_jobs's 4)
    with pytest.raises(errors.UsageError, match="ncpus"):
        slots("host", "+1")


# -- the command line, without sshd ------------------------------------------------

def test_dash_S_colon_runs_here_without_ssh():
    """-S : is the local pool: an ssh that cannot run is never run, and
    -S wins over $GRID_HUB (here a port nobody listens on)."""
    args = ["-k", "echo {} $(({} * 2))"]
    local = gridmap(*args, input=lines(20))
    here = gridmap("--ssh", "/nonexistent/ssh", "-S", ":", *args, input=lines(20),
                   env=clean_env(GRID_HUB="127.0.0.1:1"))
    assert (here.stdout, here.stderr, here.returncode) == \
        (local.stdout, local.stderr, local.returncode) == (local.stdout, b"", 0)


def test_ncpus_on_colon_is_the_local_pools_slots():
    r = gridmap("-S", "3/:", "-k", "echo {%}", input=lines(30))
    assert r.returncode == 0, r.stderr
    assert set(r.stdout.split()) <= {b"1", b"2", b"3"} and b"3" in r.stdout.split()


@pytest.mark.parametrize("args, code, words", [
    (["--hub", "127.0.0.1:1", "-S", "h"], errors.USAGE, b"do not go with --hub"),
    (["--local", "-S", "h"], errors.USAGE, b"do not go with --hub"),
    (["-S", "@g/h"], errors.USAGE, b"hostgroups"),
    (["-S", ","], errors.USAGE, b"no sshlogin"),
    (["--slf", "/nonexistent/sshlogins"], errors.NOINPUT, b"cannot read sshloginfile"),
    (["-S", "h", "-j", "+1"], errors.USAGE, b"ncpus"),
])
def test_bad_sshlogins_are_said(args, code, words):
    r = gridmap(*args, "echo", input=b"x\n")
    assert r.returncode == code and words in r.stderr, r.stderr
    assert r.stdout == b""


def test_colon_beside_a_host_and_a_host_that_never_starts(tmp_path):
    """The stand-in ssh for one login, one that fails as an unreachable
    host does, ':' here: every job runs, on the two that started."""
    log = tmp_path / "joblog"
    r = gridmap("--ssh", DEAD, "-S", f"deadhost,2/{HERE} herehost,1/:", "-k",
                "--joblog", str(log), "echo {}", input=lines(12))
    assert (r.stdout, r.returncode) == (lines(12), 0), r.stderr
    assert re.search(rb"gridmap: ssh deadhost: ssh to deadhost failed \(exit 255", r.stderr)
    hosts = {line.split("\t")[1] for line in log.read_text().splitlines()[1:]}
    assert hosts <= {"herehost", ":"} and len(hosts) >= 1


def test_no_host_that_starts_ends_the_run_with_69():
    r = gridmap("--ssh", DEAD, "-S", "dead1,dead2", "echo", input=b"x\n")
    assert r.returncode == errors.UNAVAILABLE, r.stderr
    assert r.stdout == b""
    assert b"gridmap: error: -S: no host left to run jobs on" in r.stderr
    assert b"dead1" in r.stderr and b"dead2" in r.stderr


# -- a real sshd ----------------------------------------------------------------------

def ssh_args(sshd):
    return ["--ssh", f"ssh -T -F {sshd.config}"]


def joblog_rows(path):
    """The joblog without the columns that differ run to run (host, times)."""
    rows = []
    for line in open(path).read().splitlines()[1:]:
        f = line.split("\t")
        rows.append((f[0], f[4], f[5], f[6], f[7], f[8]))
    return rows


def test_gridmap_S_prints_what_a_local_run_prints(sshd, tmp_path):
    args = ["-k", "echo {} $(({} * {})); echo err {} >&2; exit $(({} % 7 == 0))"]
    remote = gridmap(*ssh_args(sshd), "-S", "2/gridtest,gridtest", "--joblog",
                     str(tmp_path / "remote"), *args, input=lines(40))
    local = gridmap("--joblog", str(tmp_path / "local"), *args, input=lines(40))
    assert remote.returncode == local.returncode == 5, remote.stderr
    assert remote.stdout == local.stdout
    assert sorted(remote.stderr.splitlines()) == sorted(local.stderr.splitlines())
    assert joblog_rows(tmp_path / "remote") == joblog_rows(tmp_path / "local")
    hosts = {line.split("\t")[1] for line in (tmp_path / "remote").read_text().splitlines()[1:]}
    assert hosts == {"gridtest"}


def test_an_sshloginfile_and_an_unreachable_host(sshd, tmp_path):
    slf = tmp_path / "hosts"
    slf.write_text("# the test sshd, and a port nobody listens on\nunreachable\n2/gridtest\n")
    r = gridmap(*ssh_args(sshd), "--slf", str(slf), "-k", "echo", input=lines(10))
    assert (r.stdout, r.returncode) == (lines(10), 0), r.stderr
    assert re.search(rb"ssh unreachable: ssh to unreachable failed \(exit 255", r.stderr)


def test_only_unreachable_hosts_end_the_run_with_69(sshd):
    r = gridmap(*ssh_args(sshd), "-S", "unreachable", "echo", input=b"x\n")
    assert r.returncode == errors.UNAVAILABLE and r.stdout == b"", r.stderr
    assert b"no host left to run jobs on" in r.stderr


def test_a_host_whose_worker_dies_mid_run_is_started_again(sshd, tmp_path):
    """Job 3's first try kills its worker (its shell's parent): the jobs
    that ran there are lost and, with --retries, run again on the worker
    started again; the output is a local run's."""
    flag = tmp_path / "killed"
    cmd = (f"if [ {{}} = 3 ] && mkdir {flag} 2>/dev/null; then kill -9 $PPID; sleep 5; fi; "
           "echo {}")
    r = gridmap(*ssh_args(sshd), "-S", "2/gridtest", "--retries", "3", "-k", cmd,
                input=lines(8))
    assert (r.stdout, r.returncode) == (lines(8), 0), r.stderr
    assert flag.exists()
    assert re.search(rb"warning: job 3 lost \(worker gridtest vanished\)", r.stderr), r.stderr


def test_pipe_and_env_travel_over_the_channel(sshd, tmp_path):
    """--pipe blocks and --env variables reach the remote jobs; '..' is
    gridmap's own sshloginfile, found through XDG_CONFIG_HOME."""
    (tmp_path / "gridtools").mkdir()
    (tmp_path / "gridtools" / "sshloginfile").write_text("2/gridtest\n")
    env = clean_env(XDG_CONFIG_HOME=str(tmp_path), GREETING="hello there")
    data = lines(50000)
    args = ["-k", "--pipe", "--block", "64k", "--env", "GREETING", "echo $GREETING; wc -l"]
    remote = gridmap(*ssh_args(sshd), "-S", "..", *args, input=data, env=env)
    local = gridmap(*args, input=data, env=env)
    assert (remote.stdout, remote.returncode) == (local.stdout, 0), remote.stderr
    assert remote.stdout.count(b"hello there\n") > 1
