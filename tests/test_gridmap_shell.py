"""The shell that runs gridmap's commands: GNU parallel's rule ($PARALLEL_SHELL,
else the nearest ancestor process that is a shell, else $SHELL, else
/bin/sh), tried from bash and from sh, beside the installed GNU parallel.

gridmap and parallel are started from a shell script that does not end with
them, so that the shell stays their parent (a shell may exec the last
command of a -c string in its own place).
"""

import os
import shutil
import subprocess

import pytest

from conftest import GRIDMAP, TIMEOUT
from hubfixtures import grid  # noqa: F401  (the fixture)

BASH = shutil.which("bash")


def in_shell(shell, tool, args, prelude="", env=None, cwd=None):
    script = f'{prelude}\n"$0" "$@"; status=$?; exit $status'
    return subprocess.run([shell, "-c", script, tool, *args], capture_output=True,
                          env=dict(os.environ, **(env or {})), timeout=TIMEOUT, cwd=cwd)


def parallel():
    path = shutil.which("parallel")
    if path is None:
        pytest.skip("GNU parallel is not installed")
    return path


EXPORT_F = 'f() { echo "f:$1"; }; export -f f'

# (id, parent shell, prelude, extra environment, arguments, stdout, status);
# stdout recorded with GNU parallel 20221122.
CASES = [
    ("exported_function", "bash", EXPORT_F, {}, ["-k", "f", ":::", "a", "b"],
     b"f:a\nf:b\n", 0),
    ("exported_function_in_a_line", "bash", EXPORT_F, {},
     ["-k", "f {}; f x{}", ":::", "a"], b"f:a\nf:xa\n", 0),
    ("bash_syntax", "bash", "", {},
     ["-k", "[[ {} == a* ]] && echo yes {} || echo no {}", ":::", "ab", "b"],
     b"yes ab\nno b\n", 0),
    ("bash_ansi_c_quotes", "bash", "", {}, ["-k", "echo $'x\\ty' {}", ":::", "a"],
     b"x\ty a\n", 0),
    ("sh_parent_is_sh", "sh", "", {}, ["-k", "echo", "$0", "{}", ":::", "a"],
     os.fsencode(shutil.which("sh") or "") + b" a\n", 0),
    ("bash_parent_is_bash", "bash", "", {}, ["-k", "echo", "$0", "{}", ":::", "a"],
     os.fsencode(BASH or "") + b" a\n", 0),
    ("parallel_shell_wins", "bash", "", {"PARALLEL_SHELL": "/bin/sh"},
     ["-k", "echo", "$0", "{}", ":::", "a"], b"/bin/sh a\n", 0),
    ("not_found_in_the_users_shell", "bash", "", {}, ["-k", "nosuchcmd", ":::", "a", "b"],
     b"", 2),
]
IDS = [c[0] for c in CASES]


@pytest.mark.skipif(BASH is None, reason="no bash")
@pytest.mark.parametrize("shell,prelude,env,args,stdout,status",
                         [c[1:] for c in CASES], ids=IDS)
def test_shell_golden(tmp_path, shell, prelude, env, args, stdout, status):
    p = in_shell(shell, GRIDMAP, args, prelude, env, cwd=tmp_path)
    assert (p.stdout, p.returncode) == (stdout, status), p.stderr


@pytest.mark.skipif(BASH is None, reason="no bash")
@pytest.mark.parametrize("shell,prelude,env,args", [c[1:5] for c in CASES], ids=IDS)
def test_shell_live_against_parallel(tmp_path, shell, prelude, env, args):
    theirs = in_shell(shell, parallel(), args, prelude, env, cwd=tmp_path)
    ours = in_shell(shell, GRIDMAP, args, prelude, env, cwd=tmp_path)
    # Error messages too: they come from the same shell.
    assert (ours.stdout, ours.stderr, ours.returncode) == \
        (theirs.stdout, theirs.stderr, theirs.returncode)


def test_a_missing_parallel_shell_is_a_usage_error(tmp_path):
    p = in_shell("sh", GRIDMAP, ["echo", ":::", "a"], env={"PARALLEL_SHELL": "no-such-shell"})
    assert (p.returncode, p.stdout) == (64, b"")
    assert b"gridmap: error: shell 'no-such-shell' not found" in p.stderr


def test_commands_needing_no_shell_still_run_directly(tmp_path):
    # bash sets $_ to the path of each program it runs: run through bash,
    # printenv would see its own path; run directly, it sees what bash set
    # for gridmap.
    p = in_shell("bash", GRIDMAP, ["-k", "printenv", ":::", "_"])
    assert (p.stdout, p.returncode) == (os.fsencode(GRIDMAP) + b"\n", 0)
    p = in_shell("bash", GRIDMAP, ["-k", "printenv {}; true", ":::", "_"])
    assert (p.stdout, p.returncode) == (os.fsencode(shutil.which("printenv")) + b"\n", 0)


@pytest.mark.skipif(BASH is None, reason="no bash")
def test_through_a_hub_the_worker_runs_the_same_shell(grid):  # noqa: F811
    grid.start_hub()
    grid.start_worker(slots=1)
    p = in_shell("bash", GRIDMAP, ["--hub", grid.addr, "-k",
                                   "[[ {} == a* ]] && echo yes {} || echo no {}",
                                   ":::", "ab", "b"])
    assert (p.stdout, p.returncode) == (b"yes ab\nno b\n", 0), p.stderr
