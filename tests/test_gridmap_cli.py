"""gridmap's command line: parse_options in process, the small parsers, and
the exit codes of the real command for its own trouble."""

import os
import re

import pytest

from conftest import run_gridmap
from gridtools.proto import errors
from gridtools.cli import gridmap


def test_options_stop_at_the_command():
    o = gridmap.parse_options(["-j", "4", "-k", "echo", "-n", "-k", "{}"])
    assert (o.jobs, o.keep_order, o.command) == ("4", True, ["echo", "-n", "-k", "{}"])


def test_double_dash_ends_options():
    o = gridmap.parse_options(["-k", "--", "-x", "{}"])
    assert o.command == ["-x", "{}"]


def test_sources():
    o = gridmap.parse_options(["echo", ":::", "a", "b", ":::+", "c", "::::", "f1", "f2",
                               "::::+", "g"])
    assert o.sources == [("args", ["a", "b"], False), ("args", ["c"], True),
                         ("file", "f1", False), ("file", "f2", False), ("file", "g", True)]


def test_empty_list_source():
    assert gridmap.parse_options(["echo", ":::"]).sources == [("args", [], False)]


@pytest.mark.parametrize("argv,keep,jobs,null,xargs,max_args,command", [
    (["-kj2", "echo"], True, "2", False, False, None, ["echo"]),
    (["-kj", "3", "echo"], True, "3", False, False, None, ["echo"]),
    (["-0kX", "echo"], True, "100%", True, True, None, ["echo"]),
    (["-kn2", "echo", "-kn3"], True, "100%", False, False, 2, ["echo", "-kn3"]),
    (["-j-1", "-k0", "echo"], True, "-1", True, False, None, ["echo"]),
])
def test_bundled_short_options(argv, keep, jobs, null, xargs, max_args, command):
    # As getopt bundles them: flags, then an option taking the rest of the
    # word or, at its end, the next word.
    o = gridmap.parse_options(argv)
    assert (o.keep_order, o.jobs, o.null, o.xargs, o.max_args, o.command) == \
        (keep, jobs, null, xargs, max_args, command)


@pytest.mark.parametrize("argv", [["-kj2x", "echo"], ["-kZ", "echo"], ["-kj"]])
def test_bad_bundles_are_usage_errors(argv):
    assert run_gridmap(argv).returncode == 64


def test_negative_and_glued_values():
    assert gridmap.parse_options(["-j", "-1", "echo"]).jobs == "-1"
    assert gridmap.parse_options(["--jobs=3", "echo"]).jobs == "3"
    o = gridmap.parse_options(["--timeout", "1.5", "--retries", "2", "--halt", "now,fail=1",
                               "--colsep", "-", "echo"])
    assert (o.timeout, o.retries, o.halt, o.colsep) == (1.5, 2, "now,fail=1", "-")


def test_no_command():
    o = gridmap.parse_options([])
    assert o.command == [] and o.sources == []


@pytest.mark.parametrize("text,cores,n", [
    ("3", 2, 3), ("100%", 2, 2), ("200%", 2, 4), ("50%", 1, 1), ("+1", 2, 3), ("-1", 2, 1),
    ("-5", 2, 1), ("0", 2, 1 << 20), ("150%", 4, 6),
])
def test_parse_jobs(text, cores, n):
    assert gridmap.parse_jobs(text, cores=cores) == n


@pytest.mark.parametrize("text", ["x", "", "1.5.2", "%"])
def test_parse_jobs_rejects(text):
    with pytest.raises(errors.UsageError):
        gridmap.parse_jobs(text, cores=2)


@pytest.mark.parametrize("text,when,kind,count,percent", [
    ("now,fail=1", "now", "fail", 1, False), ("soon,fail=20%", "soon", "fail", 20, True),
    ("success=2", "now", "success", 2, False), ("soon,done=3", "soon", "done", 3, False),
    ("1", "soon", "fail", 1, False), ("2", "now", "fail", 1, False),
    ("-1", "soon", "success", 1, False), ("-2", "now", "success", 1, False),
    ("5%", "soon", "fail", 5, True),
])
def test_parse_halt(text, when, kind, count, percent):
    h = gridmap.parse_halt(text)
    assert (h.when, h.kind, h.count, h.percent) == (when, kind, count, percent)


@pytest.mark.parametrize("text", ["bad", "now", "later,fail=1", "now,fail=0", "now,fail=101%",
                                  "now,fail=x"])
def test_parse_halt_rejects(text):
    with pytest.raises(errors.UsageError):
        gridmap.parse_halt(text)


def test_halt_never():
    assert gridmap.parse_halt("0").when == "never"
    assert gridmap.parse_halt(None).when == "never"


def test_halt_triggers():
    h = gridmap.parse_halt("now,fail=50%")
    h.total = 6                             # P% of all the jobs
    assert not h.triggered(2, 0, 2)
    assert h.triggered(3, 0, 3)
    assert not h.triggered(2, 3, 5)


@pytest.mark.parametrize("args", [
    ["--no-such-option", "echo"], ["-j", "x", "echo"], ["-j"], ["--halt", "bad", "echo"],
    ["--pipe", "--block", "x", "cat"], ["--colsep", "[", "echo"], ["--retries", "-1", "echo"],
    ["--retries", "x", "echo"], ["--timeout", "0", "echo"], ["--timeout", "x", "echo"],
    ["--round-robin", "echo"], ["--pipe"], ["-d", "", "echo"], ["-n", "0", "echo"],
    ["-n", "x", "echo"], ["echo", "::::"], ["--trim", "x", "echo"],
    ["--recend", "", "--recstart", "", "--pipe", "cat"],
])
def test_usage_errors_exit_64(args):
    p = run_gridmap(args, input=b"a\n")
    assert p.returncode == 64, p.stderr
    assert p.stdout == b""
    assert b"gridmap: error:" in p.stderr
    assert b"Traceback" not in p.stderr


@pytest.mark.parametrize("args", [
    ["--timeout", "-1", "true"], ["--timeout", "nan", "true"], ["-j", "x", "true"],
    ["--halt", "bad", "true"], ["-n", "0", "echo"], ["--require", "nokey", "true"],
    ["--block", "x", "--pipe", "cat"], ["--round-robin", "echo"], ["--no-such-option"],
])
def test_usage_errors_print_the_usage_line(args):
    # As argparse does for the errors it finds itself: the usage line, then
    # the error, and nothing run.
    p = run_gridmap(args, input=b"a\n")
    lines = p.stderr.decode().splitlines()
    assert p.returncode == 64 and p.stdout == b""
    assert len(lines) == 2 and lines[0].startswith("usage: gridmap "), lines
    assert lines[1].startswith("gridmap: error: ")


def test_errors_that_are_not_usage_have_no_usage_line(tmp_path):
    p = run_gridmap(["-a", str(tmp_path / "nope"), "echo"])
    assert p.returncode == 66 and b"usage:" not in p.stderr


def test_usage_error_in_process(capsys):
    assert gridmap.main(["--halt", "bad", "echo"]) == 64
    err = capsys.readouterr().err
    assert err.startswith("usage: gridmap ") and "gridmap: error: --halt" in err


def test_missing_input_file_exits_66(tmp_path):
    for args in (["-a", str(tmp_path / "nope"), "echo"], ["echo", "::::", str(tmp_path / "nope")],
                 ["echo", ":::", "a", "::::", str(tmp_path / "nope")]):
        p = run_gridmap(args)
        assert p.returncode == 66, args
        assert p.stderr.startswith(b"gridmap: error:") and b"nope" in p.stderr
        assert p.stdout == b""


def test_help_and_version_go_to_stdout():
    p = run_gridmap(["--help"])
    assert p.returncode == 0 and p.stdout.startswith(b"usage: gridmap") and p.stderr == b""
    for opt in (b"--pipe", b"--halt", b"--joblog", b"--keep-order", b"--line-buffer"):
        assert opt in p.stdout
    p = run_gridmap(["--version"])
    assert p.returncode == 0 and p.stdout.startswith(b"gridmap ")


def test_option_after_the_command_belongs_to_it():
    p = run_gridmap(["echo", "-k", ":::", "a"])
    assert p.stdout == b"-k a\n"


def test_command_starting_with_a_dash():
    # Input lines are commands; one starting with - is not a shell option.
    p = run_gridmap([], input=b"-x\n+x\n")
    assert p.returncode == 2
    # In the words of whichever shell runs them (sh: "-x: not found",
    # bash: "-x: command not found").
    err = p.stderr.decode()
    assert re.search(r"-x: .*not found", err) and re.search(r"\+x: .*not found", err)



# -- where the jobs run: --hub, $GRID_HUB, --local -----------------------------

def test_local_and_empty_hub_win_over_grid_hub(tmp_path):
    env = dict(os.environ, GRID_HUB=f"unix:{tmp_path}/no-hub.sock")
    p = run_gridmap(["echo", ":::", "a"], env=env)
    assert p.returncode == 69 and b"no-hub.sock" in p.stderr     # $GRID_HUB is used
    for choice in (["--local"], ["--hub", ""], ["--hub="]):
        p = run_gridmap([*choice, "echo", ":::", "a"], env=env)
        assert (p.returncode, p.stdout, p.stderr) == (0, b"a\n", b""), choice


@pytest.mark.parametrize("args", [["--local", "--hub", "h:1"], ["--hub=h:1", "--local"]])
def test_local_conflicts_with_hub(args):
    p = run_gridmap([*args, "echo", ":::", "a"])
    assert p.returncode == 64 and p.stdout == b""
    assert p.stderr.startswith(b"usage: gridmap") and b"not allowed with" in p.stderr


def test_hub_address_choice():
    env = {"GRID_HUB": "h:1"}
    assert gridmap.hub_address(gridmap.parse_options(["echo"]), env) == "h:1"
    assert gridmap.hub_address(gridmap.parse_options(["--hub", "g:2", "echo"]), env) == "g:2"
    assert gridmap.hub_address(gridmap.parse_options(["--local", "echo"]), env) is None
    assert gridmap.hub_address(gridmap.parse_options(["--hub", "", "echo"]), env) is None
    assert gridmap.hub_address(gridmap.parse_options(["echo"]), {"GRID_HUB": ""}) is None
