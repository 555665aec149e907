"""gridmap against GNU parallel for the options taken from it beyond
xargs's: --header (with ::: sources, --colsep, -a, --tagstring, --pipe,
--round-robin), --pipepart (with --block -N and --header), --tee, -u,
--env, --plus, --results and --files (the trees they write), --resume,
--resume-failed, --retry-failed and --joblog +FILE.

Each case was recorded twice with GNU parallel 20221122 (identical both
times): stdout, exit status, joblog Seq/Exitval/Signal.  When `parallel`
is on PATH the cases are also compared live.
"""

import os
import pathlib
import re

import pytest

from conftest import run_gridmap, run_parallel
from hubfixtures import grid  # noqa: F401  (the fixture)

FILES = {"f5": b"h\n1\n2\n3\n4\n", "f10": b"".join(b"%d\n" % i for i in range(1, 11)),
         "f100": b"".join(b"%d\n" % i for i in range(1, 101)),
         "cols.tsv": b"name\tn\nx.gz\t1\ny/z.c\t2\n"}
ENV = {"SHELL": "/bin/sh", "GM_X": "hello"}

# (id, arguments, stdin, stdout, exit status, joblog Seq/Exitval/Signal rows)
CASES = [
    ('header_sources', ['-k', '--header', ':', 'echo', '{b}', '{a}', '{}', ':::', 'a', '1', '2', ':::', 'b', 'x', 'y'], b'', b'x 1 1 x\ny 1 1 y\nx 2 2 x\ny 2 2 y\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n4\t0\t0\n'),
    ('header_colsep', ['-k', '--header', ':', '--colsep', '\\t', 'echo', '{n}', '{name}', '{1}'], b'f1\tf2\nA\tB\n', b'{n} {name} A\n', 0, '1\t0\t0\n'),
    ('header_modifiers', ['-k', '--header', ':', 'echo', '{name}', '{name.}', '{name/}', '{name//}', '{name/.}', '{#}'], b'name\nx.gz\ny/z.c\n', b'x.gz x x.gz . x 1\ny/z.c y/z z.c y z 2\n', 0, '1\t0\t0\n2\t0\t0\n'),
    ('header_tab_untrimmed', ['-k', '--header', ':', 'echo', '[{a}]', '[{b}]'], b'a\tb\n x \t y\n', b'[ x ] [ y]\n', 0, '1\t0\t0\n'),
    ('header_comma', ['-k', '--header', ':', '--colsep', ',', 'echo', '{b}-{a}'], b'a,b\n1,2\n 3 , 4 \n', b'2-1\n4-3\n', 0, '1\t0\t0\n2\t0\t0\n'),
    ('header_file', ['-k', '--header', ':', '-a', 'cols.tsv', 'echo', '{n}:{name.}'], b'', b'1:x\n2:y/z\n', 0, '1\t0\t0\n2\t0\t0\n'),
    ('header_tagstring', ['-k', '--header', ':', '--tagstring', '<{a}>', 'echo', '{a}', ':::', 'a', '1', '2'], b'', b'<1>\t1\n<2>\t2\n', 0, '1\t0\t0\n2\t0\t0\n'),
    ('header_pipe', ['-k', '--header', ':', '--pipe', '-N1', 'cat'], b'h1\nA\nB\nC\n', b'h1\nA\nh1\nB\nh1\nC\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n'),
    ('header_pipe_2', ['-k', '--header', '2', '--pipe', '-N2', 'cat;', 'echo', '--'], b'h1\nh2\nA\nB\nC\n', b'h1\nh2\nA\nB\n--\nh1\nh2\nC\n--\n', 0, '1\t0\t0\n2\t0\t0\n'),
    ('header_pipe_rr', ['-k', '--header', ':', '--pipe', '-N1', '-j2', '--round-robin', 'cat;', 'echo', '=='], b'h\n1\n2\n3\n4\n', b'h\n1\n3\n==\nh\n2\n4\n==\n', 0, '1\t0\t0\n2\t0\t0\n'),
    ('pipepart_block', ['-k', '--pipepart', '-a', 'f10', '--block', '5', 'cat;', 'echo', '--'], b'', b'1\n2\n3\n--\n4\n5\n6\n--\n7\n8\n9\n--\n10\n--\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n4\t0\t0\n'),
    ('pipepart_header', ['-k', '--pipepart', '-a', 'f5', '--header', ':', '--block', '4', 'cat;', 'echo', '--'], b'', b'h\n1\n2\n3\n--\nh\n4\n--\n', 0, '1\t0\t0\n2\t0\t0\n'),
    ('pipepart_per_slot', ['-k', '--pipepart', '-a', 'f100', '--block', '-2', '-j3', 'wc', '-l'], b'', b'20\n17\n17\n17\n17\n12\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n4\t0\t0\n5\t0\t0\n6\t0\t0\n'),
    ('pipepart_default', ['-k', '--pipepart', '-j2', 'wc', '-l', '::::', 'f100', 'f10'], b'', b'9\n6\n6\n6\n6\n6\n6\n6\n6\n6\n6\n6\n6\n6\n6\n6\n1\n9\n1\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n4\t0\t0\n5\t0\t0\n6\t0\t0\n7\t0\t0\n8\t0\t0\n9\t0\t0\n10\t0\t0\n11\t0\t0\n12\t0\t0\n13\t0\t0\n14\t0\t0\n15\t0\t0\n16\t0\t0\n17\t0\t0\n18\t0\t0\n19\t0\t0\n'),
    ('pipepart_recstart', ['-k', '--pipepart', '-j2', '--block', '3', '--recstart', '1', 'cat;', 'echo', '--', '::::', 'f10'], b'', b'1\n2\n3\n4\n5\n6\n7\n8\n9\n--\n10\n--\n', 0, '1\t0\t0\n2\t0\t0\n'),
    ('tee', ['-k', '--pipe', '--tee', 'sed', 's/^/{}:/', ':::', 'a', 'b', 'c'], b'1\n2\n3\n', b'a:1\na:2\na:3\nb:1\nb:2\nb:3\nc:1\nc:2\nc:3\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n'),
    ('tee_wc', ['-k', '--tee', '--pipe', 'wc', '-{}', ':::', 'l', 'c'], b'one\ntwo\n', b'2\n8\n', 0, '1\t0\t0\n2\t0\t0\n'),
    ('ungroup_one', ['-u', 'printf', '%s-', ':::', 'a'], b'', b'a-', 0, '1\t0\t0\n'),
    ('ungroup_j1', ['-u', '-j1', 'printf', '%s-', ':::', 'a', 'b'], b'', b'a-b-', 0, '1\t0\t0\n2\t0\t0\n'),
    ('env_local', ['-k', '--env', 'GM_X', 'echo', '$GM_X', '{}', ':::', 'a'], b'', b'hello a\n', 0, '1\t0\t0\n'),
    ('plus_path', ['-k', '-j1', '--plus', 'echo', '{}', '{+/}', '{+.}', '{+..}', '{+...}', '{..}', '{...}', '{/..}', '{/...}', ':::', 'a/b.tar.gz', 'c', 'd/e.f.g.h', 'x.y/z', '.a'], b'', b'a/b.tar.gz a gz tar.gz  a/b a/b.tar.gz b b.tar.gz\nc     c c c c\nd/e.f.g.h d h g.h f.g.h d/e.f d/e e.f e\nx.y/z x.y y/z   x.y/z x.y/z z z\n.a  a   .a .a .a .a\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n4\t0\t0\n5\t0\t0\n'),
    ('plus_positional', ['-k', '--plus', 'echo', '{2+/}', '{2..}', '{1/...}', '{-1+.}', ':::', 'x/y.tar.gz', ':::', 'u/v.a.b'], b'', b'u u/v y.tar.gz b\n', 0, '1\t0\t0\n'),
    ('plus_counts', ['-k', '-j1', '--plus', 'echo', '{0#}', '{0%}', '{##}', '{#}'], b'1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n', b'01 1 11 1\n02 1 11 2\n03 1 11 3\n04 1 11 4\n05 1 11 5\n06 1 11 6\n07 1 11 7\n08 1 11 8\n09 1 11 9\n10 1 11 10\n11 1 11 11\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n4\t0\t0\n5\t0\t0\n6\t0\t0\n7\t0\t0\n8\t0\t0\n9\t0\t0\n10\t0\t0\n11\t0\t0\n'),
    ('plus_counts_list', ['-k', '-j1', '--plus', 'echo', '{##}-{0#}', ':::', 'a', 'b', ':::', '1', '2', '3'], b'', b'6-1\n6-2\n6-3\n6-4\n6-5\n6-6\n', 0, '1\t0\t0\n2\t0\t0\n3\t0\t0\n4\t0\t0\n5\t0\t0\n6\t0\t0\n'),
    ('plus_off', ['-k', 'echo', '{..}', '{+.}', '{##}', ':::', 'a.b.c'], b'', b'{..} {+.} {##} a.b.c\n', 0, '1\t0\t0\n'),
]


def joblog_cut(path):
    rows = path.read_text().splitlines()[1:]
    return "".join("\t".join(line.split("\t")[i] for i in (0, 6, 7)) + "\n" for line in rows)


def run_case(d, runner, args, stdin):
    d.mkdir(parents=True)
    for name, data in FILES.items():
        (d / name).write_bytes(data)
    p = runner(["--joblog", "jl", *args], input=stdin, cwd=d, env=ENV)
    return p.stdout, p.returncode, joblog_cut(d / "jl")


def gridmap_env(args, **kw):
    kw["env"] = dict(os.environ, **kw.pop("env", {}))
    return run_gridmap(args, **kw)


@pytest.mark.parametrize("args,stdin,stdout,status,joblog", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_golden(tmp_path, args, stdin, stdout, status, joblog):
    assert run_case(tmp_path / "g", gridmap_env, args, stdin) == (stdout, status, joblog)


@pytest.mark.parametrize("args,stdin", [c[1:3] for c in CASES], ids=[c[0] for c in CASES])
def test_live(tmp_path, args, stdin):
    theirs = run_case(tmp_path / "p", run_parallel, args, stdin)
    assert run_case(tmp_path / "g", gridmap_env, args, stdin) == theirs


# --results: (id, arguments, stdin, stdout, exit status, {path: content,
# None for a directory}) recorded from GNU parallel.
RESULTS = [
    ('results_tree', ['-k', '--results', 'r', 'echo {1}-{2}; echo e{} >&2', ':::', 'a', 'b c', ':::', 'x/y', 't\\u'], b'', b'', 0, {'r': None, 'r/1': None, 'r/1/a': None, 'r/1/b c': None, 'r/1/a/2': None, 'r/1/a/2/t\\\\u': None, 'r/1/a/2/x\\_y': None, 'r/1/a/2/t\\\\u/stderr': b'ea t\\u\n', 'r/1/a/2/t\\\\u/seq': b'2', 'r/1/a/2/t\\\\u/stdout': b'a-t\\u\n', 'r/1/a/2/x\\_y/stderr': b'ea x/y\n', 'r/1/a/2/x\\_y/seq': b'1', 'r/1/a/2/x\\_y/stdout': b'a-x/y\n', 'r/1/b c/2': None, 'r/1/b c/2/t\\\\u': None, 'r/1/b c/2/x\\_y': None, 'r/1/b c/2/t\\\\u/stderr': b'eb c t\\u\n', 'r/1/b c/2/t\\\\u/seq': b'4', 'r/1/b c/2/t\\\\u/stdout': b'b c-t\\u\n', 'r/1/b c/2/x\\_y/stderr': b'eb c x/y\n', 'r/1/b c/2/x\\_y/seq': b'3', 'r/1/b c/2/x\\_y/stdout': b'b c-x/y\n'}),
    ('results_header', ['-k', '--header', ':', '--results', 'r', 'echo', '{z}', '{a}', ':::', 'z', '1', ':::', 'a', '2', '3'], b'', b'', 0, {'r': None, 'r/a': None, 'r/a/3': None, 'r/a/2': None, 'r/a/3/z': None, 'r/a/3/z/1': None, 'r/a/3/z/1/stderr': b'', 'r/a/3/z/1/seq': b'2', 'r/a/3/z/1/stdout': b'1 3\n', 'r/a/2/z': None, 'r/a/2/z/1': None, 'r/a/2/z/1/stderr': b'', 'r/a/2/z/1/seq': b'1', 'r/a/2/z/1/stdout': b'1 2\n'}),
    ('results_stdin', ['-k', '--results', 'r', 'echo'], b'q\nw\n', b'', 0, {'r': None, 'r/1': None, 'r/1/q': None, 'r/1/w': None, 'r/1/q/stderr': b'', 'r/1/q/seq': b'1', 'r/1/q/stdout': b'q\n', 'r/1/w/stderr': b'', 'r/1/w/seq': b'2', 'r/1/w/stdout': b'w\n'}),
    ('results_colsep_n2', ['-k', '-n2', '--colsep', ',', '--results', 'r', 'echo'], b'a,b\nc,d\ne,f\n', b'', 0, {'r': None, 'r/1': None, 'r/1/e': None, 'r/1/a': None, 'r/1/e/2': None, 'r/1/e/2/f': None, 'r/1/e/2/f/stderr': b'', 'r/1/e/2/f/seq': b'2', 'r/1/e/2/f/stdout': b'e f\n', 'r/1/a/2': None, 'r/1/a/2/b': None, 'r/1/a/2/b/1': None, 'r/1/a/2/b/1/c': None, 'r/1/a/2/b/1/c/2': None, 'r/1/a/2/b/1/c/2/d': None, 'r/1/a/2/b/1/c/2/d/stderr': b'', 'r/1/a/2/b/1/c/2/d/seq': b'1', 'r/1/a/2/b/1/c/2/d/stdout': b'a b c d\n'}),
    ('results_template', ['-k', '--results', 'r/{}_x', 'echo', ':::', 'a', 'b'], b'', b'', 0, {'r': None, 'r/b_x.seq': b'2', 'r/b_x.err': b'', 'r/a_x': b'a\n', 'r/a_x.err': b'', 'r/b_x': b'b\n', 'r/a_x.seq': b'1'}),
    ('results_template_dir', ['-k', '--results', 'r/{}/', 'echo; exit {#}', ':::', 'a', 'b'], b'', b'', 2, {'r': None, 'r/b': None, 'r/a': None, 'r/b/stderr': b'', 'r/b/seq': b'2', 'r/b/stdout': b'\n', 'r/a/stderr': b'', 'r/a/seq': b'1', 'r/a/stdout': b'\n'}),
    ('results_files', ['-k', '--tag', '--results', 'r', '--files', 'echo', ':::', 'a', 'b'], b'', b'a\tr/1/a/stdout\nb\tr/1/b/stdout\n', 0, {'r': None, 'r/1': None, 'r/1/b': None, 'r/1/a': None, 'r/1/b/stderr': b'', 'r/1/b/seq': b'2', 'r/1/b/stdout': b'b\n', 'r/1/a/stderr': b'', 'r/1/a/seq': b'1', 'r/1/a/stdout': b'a\n'}),
]


def tree(d):
    out = {}
    for root, dirs, files in os.walk(d):
        for n in dirs + files:
            p = os.path.join(root, n)
            out[os.path.relpath(p, d)] = pathlib.Path(p).read_bytes() if os.path.isfile(p) \
                else None
    return out


def run_tree(d, runner, args, stdin):
    d.mkdir(parents=True)
    p = runner(args, input=stdin, cwd=d, env={"SHELL": "/bin/sh"})
    return p.stdout, p.returncode, tree(d)


@pytest.mark.parametrize("args,stdin,stdout,status,files", [c[1:] for c in RESULTS],
                         ids=[c[0] for c in RESULTS])
def test_results_golden(tmp_path, args, stdin, stdout, status, files):
    assert run_tree(tmp_path / "g", gridmap_env, args, stdin) == (stdout, status, files)


@pytest.mark.parametrize("args,stdin", [c[1:3] for c in RESULTS], ids=[c[0] for c in RESULTS])
def test_results_live(tmp_path, args, stdin):
    theirs = run_tree(tmp_path / "p", run_parallel, args, stdin)
    assert run_tree(tmp_path / "g", gridmap_env, args, stdin) == theirs


@pytest.mark.parametrize("runner", [gridmap_env, run_parallel], ids=["gridmap", "parallel"])
def test_files_prints_the_names_of_kept_output(tmp_path, runner):
    # Both tools: one new file in TMPDIR per job holding its stdout, its
    # name printed (after the --tag), nothing else on stdout.
    p = runner(["-k", "--tag", "--files", "echo", ":::", "a", "b"],
               env={"TMPDIR": str(tmp_path)})
    lines = p.stdout.decode().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["a", "b"] and p.returncode == 0
    names = [line.split("\t")[1] for line in lines]
    assert all(re.fullmatch(re.escape(str(tmp_path)) + r"/par\w+\.par", n) for n in names)
    assert [pathlib.Path(n).read_bytes() for n in names] == [b"a\n", b"b\n"]
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(n) for n in names)


def test_files_in_tmpdir_and_stderr_kept(tmp_path):
    # gridmap's difference: the jobs' stderr is printed, not dropped.
    p = run_gridmap(["--files", "--tmpdir", str(tmp_path), "echo a{}; echo b >&2", ":::", "1"])
    name = p.stdout.decode().strip()
    assert os.path.dirname(name) == str(tmp_path) and p.stderr == b"b\n"
    assert pathlib.Path(name).read_bytes() == b"a1\n"


# --results x.csv, x.tsv, x.json: tests/test_gridmap_results.py.


# --resume and friends: a first run writes the joblog, a second resumes
# from it.  (id, first arguments, second arguments)
RESUME = [
    ("resume", ["-k", "echo {}; exit {}", ":::", "0", "1", "0"],
     ["-k", "--resume", "echo {}; exit {}", ":::", "0", "1", "0", "2", "3"]),
    ("resume_failed", ["-k", "echo {}; exit {}", ":::", "0", "1", "0", "2", "3"],
     ["-k", "--resume-failed", "echo {}; exit {}", ":::", "0", "1", "0", "2", "3", "0"]),
    ("resume_failed_stdin", ["-k", "echo {}; exit {}", ":::", "1", "1"],
     ["-k", "--resume-failed", "echo {}; exit {}"]),
    ("retry_failed", ["-k", "echo {}; exit {}", ":::", "0", "1", "0", "2", "3"],
     ["-k", "--retry-failed"]),
    ("retry_failed_ignores_command", ["-k", "echo {}; exit {}", ":::", "0", "1", "0", "2"],
     ["-k", "--retry-failed", "echo", ":::", "x"]),
    ("resume_all_done", ["-k", "echo {}", ":::", "a", "b"],
     ["-k", "--resume", "echo {}", ":::", "a", "b"]),
]
RESUME_GOLDEN = {
    'resume': (b'2\n3\n', 2, 'Seq\tExitval\tSignal\tCommand\n1\t0\t0\techo 0; exit 0\n2\t1\t0\techo 1; exit 1\n3\t0\t0\techo 0; exit 0\n4\t2\t0\techo 2; exit 2\n5\t3\t0\techo 3; exit 3\n'),
    'resume_failed': (b'1\n2\n3\n0\n', 3, 'Seq\tExitval\tSignal\tCommand\n1\t0\t0\techo 0; exit 0\n2\t1\t0\techo 1; exit 1\n3\t0\t0\techo 0; exit 0\n4\t2\t0\techo 2; exit 2\n5\t3\t0\techo 3; exit 3\n2\t1\t0\techo 1; exit 1\n4\t2\t0\techo 2; exit 2\n5\t3\t0\techo 3; exit 3\n6\t0\t0\techo 0; exit 0\n'),
    'resume_failed_stdin': (b'', 0, 'Seq\tExitval\tSignal\tCommand\n1\t1\t0\techo 1; exit 1\n2\t1\t0\techo 1; exit 1\n'),
    'retry_failed': (b'1\n2\n3\n', 3, 'Seq\tExitval\tSignal\tCommand\n1\t0\t0\techo 0; exit 0\n2\t1\t0\techo 1; exit 1\n3\t0\t0\techo 0; exit 0\n4\t2\t0\techo 2; exit 2\n5\t3\t0\techo 3; exit 3\n2\t1\t0\techo 1; exit 1\n4\t2\t0\techo 2; exit 2\n5\t3\t0\techo 3; exit 3\n'),
    'retry_failed_ignores_command': (b'1\n2\n', 2, 'Seq\tExitval\tSignal\tCommand\n1\t0\t0\techo 0; exit 0\n2\t1\t0\techo 1; exit 1\n3\t0\t0\techo 0; exit 0\n4\t2\t0\techo 2; exit 2\n2\t1\t0\techo 1; exit 1\n4\t2\t0\techo 2; exit 2\n'),
    'resume_all_done': (b'', 0, 'Seq\tExitval\tSignal\tCommand\n1\t0\t0\techo a\n2\t0\t0\techo b\n'),
}


def joblog_rows(path):
    """`cut -f1,7,8,9` of a joblog."""
    return "".join("\t".join(line.split("\t")[i] for i in (0, 6, 7, 8)) + "\n"
                   for line in path.read_text().splitlines())


def run_resume(d, runner, first, second):
    d.mkdir(parents=True)
    runner(["--joblog", "jl", *first], cwd=d, env={"SHELL": "/bin/sh"})
    p = runner(["--joblog", "jl", *second], cwd=d, env={"SHELL": "/bin/sh"})
    return p.stdout, p.returncode, joblog_rows(d / "jl")


@pytest.mark.parametrize("first,second", [c[1:] for c in RESUME], ids=[c[0] for c in RESUME])
def test_resume_golden(tmp_path, first, second):
    cid = next(c[0] for c in RESUME if c[1:] == (first, second))
    assert run_resume(tmp_path / "g", gridmap_env, first, second) == RESUME_GOLDEN[cid]


@pytest.mark.parametrize("first,second", [c[1:] for c in RESUME], ids=[c[0] for c in RESUME])
def test_resume_live(tmp_path, first, second):
    theirs = run_resume(tmp_path / "p", run_parallel, first, second)
    assert run_resume(tmp_path / "g", gridmap_env, first, second) == theirs


def test_joblog_plus_appends(tmp_path):
    for runner, d in ((gridmap_env, tmp_path / "g"), (run_parallel, tmp_path / "p")):
        d.mkdir()
        runner(["--joblog", "jl", "echo", ":::", "a"], cwd=d)
        p = runner(["--joblog", "+jl", "exit", ":::", "3"], cwd=d)
        assert p.returncode == 1
    assert joblog_rows(tmp_path / "g" / "jl") == joblog_rows(tmp_path / "p" / "jl") == \
        "Seq\tExitval\tSignal\tCommand\n1\t0\t0\techo a\n1\t3\t0\texit 3\n"


@pytest.mark.parametrize("args,why", [
    (["--resume", "echo", ":::", "a"], b"--resume needs --joblog FILE"),
    (["--retry-failed"], b"--retry-failed needs --joblog FILE"),
    (["--pipe", "--block", "-1", "cat"], b"--block: a negative value"),
    (["--pipepart", "cat"], b"--pipepart needs a file"),
    (["--pipepart", "-N1", "-a", "x", "cat"], b"--pipepart cannot count records"),
    (["--tee", "cat", ":::", "a"], b"--tee goes with --pipe"),
    (["--env", "A=B", "true"], b"--env: not a variable name"),
    (["--header", "(", "--pipe", "cat"], b"--header: bad regular expression"),
])
def test_bad_values_are_usage_errors(args, why):
    p = run_gridmap(args)
    assert p.returncode == 64 and why in p.stderr, p.stderr


def test_pipepart_refuses_a_pipe(tmp_path):
    p = run_gridmap(["--pipepart", "-a", "/dev/stdin", "cat"], input=b"x\n")
    assert p.returncode == 66 and b"not a regular file" in p.stderr


def test_tee_needs_no_more_slots_than_inputs():
    # GNU parallel refuses --tee with fewer slots than inputs; gridmap reads
    # stdin first, so any -j works.
    p = run_gridmap(["-k", "-j1", "--pipe", "--tee", "sed", "s/^/{}:/", ":::", "a", "b"],
                    input=b"1\n2\n")
    assert (p.stdout, p.returncode) == (b"a:1\na:2\nb:1\nb:2\n", 0)


def test_ungroup_passes_half_lines_at_once(tmp_path):
    # -u: the first job's half line is out before the second job's line,
    # although the second job ends first (grouped: "second\nfirst\n").
    flag = tmp_path / "flag"
    p = run_gridmap(["-u", "-j2", "sh", "-c", "{}", ":::",
                     f"printf first; while [ ! -e {flag} ]; do sleep 0.05; done; echo",
                     f"sleep 0.3; touch {flag}; echo second"])
    assert (p.stdout, p.returncode) == (b"firstsecond\n\n", 0)


def test_env_reaches_jobs_through_a_hub(grid):  # noqa: F811
    grid.start_hub()
    grid.start_worker(slots=1)
    env = dict(os.environ, GRID_HUB=grid.addr, GM_X="from client", GM_Y="y z")
    env.pop("GM_Z", None)
    p = grid.run("gridmap", "-k", "--env", "GM_X", "--env", "GM_Y", "--env", "GM_Z",
                 "echo \"[$GM_X] [$GM_Y] [$GM_Z]\" {}", ":::", "a", env=env)
    assert (p.stdout, p.returncode) == (b"[from client] [y z] [] a\n", 0), p.stderr
    p = grid.run("gridmap", "-k", "echo \"[$GM_X]\"", ":::", "a", env=env)
    assert p.stdout == b"[] a\n"


TERMSEQ = ["--timeout", "1", "--termseq", "INT,300,TERM,300,KILL,25",
           "trap 'echo int' INT; trap 'echo term' TERM; while :; do sleep 0.05; done; echo {}",
           ":::", "a"]


@pytest.mark.parametrize("runner", [gridmap_env, run_parallel], ids=["gridmap", "parallel"])
def test_termseq_signals_in_turn(runner):
    # Recorded from GNU parallel: INT, then TERM, then KILL; one failure.
    p = runner(TERMSEQ)
    assert (p.stdout, p.returncode) == (b"int\nterm\n", 1)


@pytest.mark.parametrize("value", ["FOO,1", "TERM,x", "TERM,-1", ""])
def test_termseq_bad_values(value):
    p = run_gridmap(["--termseq", value, "true"])
    assert p.returncode == 64 and b"--termseq" in p.stderr
