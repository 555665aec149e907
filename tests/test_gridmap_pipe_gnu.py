"""gridmap's --pipe options from GNU parallel: --cat, --fifo, --regexp
(with --pipe and --pipepart), and --skip-first-line.

Each case was recorded twice with GNU parallel 20221122 (the same both
times); when `parallel` is on PATH the cases are also compared live.
Files named ../NAME are written beside the directory the case runs in.
"""

import os
import shutil

import pytest

from conftest import run_gridmap, run_parallel
from hubfixtures import grid  # noqa: F401  (the fixture)

FILES = {"fasta": b">a\n1\n22\n>b\n333\n>c\n4\n>d\n55555\n", "hdr": b"h\n1\n2\n"}

# (id, arguments, stdin, GNU parallel's stdout, its exit status)
CASES = [
    ('cat_stdin', ['-k', '-N1', '--cat', 'wc -l < {}'], b'a\nb\nc\n', b'1\n1\n1\n', 0),
    ('cat_appended', ['-k', '-N2', '--cat', 'cat'], b'a\nb\nc\n', b'a\nb\nc\n', 0),
    ('cat_exit', ['-k', '-N1', '--cat', 'read x < {}; exit $x'], b'1\n0\n3\n', b'', 2),
    ('cat_block', ['-k', '--block', '4', '--cat', 'cat {}; echo --'], b'12\n34\n56\n7\n', b'12\n--\n34\n--\n56\n--\n7\n--\n', 0),
    ('cat_pipe_explicit', ['-k', '--pipe', '-N3', '--cat', 'sort -r {}'], b'1\n2\n3\n4\n5\n', b'3\n2\n1\n5\n4\n', 0),
    ('fifo_wc', ['-k', '-N2', '--fifo', 'wc -l < {}'], b'a\nb\nc\n', b'2\n1\n', 0),
    ('fifo_head', ['-k', '-N3', '--fifo', 'head -1 {}'], b'1\n2\n3\n4\n5\n6\n7\n', b'1\n4\n7\n', 0),
    ('fifo_exit', ['-k', '-N1', '--fifo', 'read x < {}; exit $x'], b'2\n0\n', b'', 1),
    ('regexp_recstart', ['-k', '--regexp', '--recstart', '^>', '-N1', '--pipe', 'wc -l'], b'>a\n1\n>b\n2\n3\n>c\n4\n', b'2\n3\n2\n', 0),
    ('regexp_both', ['-k', '--regexp', '--recend', '[0-9]', '--recstart', 'x', '-N1', '--pipe', 'cat; echo'], b'x1y2y3x4\n', b'x1y2y3\nx4\n\n', 0),
    ('regexp_N2', ['-k', '--regexp', '--recstart', '^#', '-N2', '--pipe', 'cat; echo ==='], b'#1\na\n#2\n#3\nb\n#4\n#5\n', b'#1\na\n#2\n===\n#3\nb\n#4\n===\n#5\n===\n', 0),
    ('regexp_alternation', ['-k', '--regexp', '--recend', 'END\n|STOP\n', '-N1', '--pipe', 'wc -l'], b'a\nEND\nb\nc\nSTOP\nd\nEND\n', b'2\n3\n2\n', 0),
    ('skip_stdin', ['-k', '--skip-first-line', 'echo'], b'a\nb\nc\n', b'b\nc\n', 0),
    ('skip_args', ['-k', '--skip-first-line', 'echo', ':::', 'x', 'y', ':::', '1', '2'], b'', b'y 1\ny 2\n', 0),
    ('skip_first_source_only', ['-k', '--skip-first-line', 'echo', ':::', 'a', 'b', '::::', '-'], b'1\n2\n', b'b 1\nb 2\n', 0),
    ('skip_file', ['-k', '--skip-first-line', 'echo', '::::', '../hdr', ':::', 'a'], b'', b'1 a\n2 a\n', 0),
    ('skip_null', ['-0', '-k', '--skip-first-line', 'echo', '[{}]'], b'a\x00b\x00c\n', b'[b]\n[c\n]\n', 0),
    ('skip_pipe', ['-k', '--skip-first-line', '--pipe', '-N1', 'cat'], b'h\n1\n2\n', b'1\n2\n', 0),
    ('skip_header', ['-k', '--skip-first-line', '--header', ':', 'echo', '{b}', '{a}'], b'junk\na\tb\n1\t2\n', b'2 1\n', 0),
]


@pytest.fixture
def work(tmp_path):
    for name, data in FILES.items():
        (tmp_path / name).write_bytes(data)
    empty = tmp_path / "empty"
    empty.mkdir()
    return empty


@pytest.mark.parametrize("args,stdin,expected,status", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_golden(work, args, stdin, expected, status):
    p = run_gridmap(args, input=stdin, cwd=work, env=dict(os.environ, TMPDIR=str(work.parent)))
    assert (p.stdout, p.returncode) == (expected, status), p.stderr
    # --cat and --fifo leave nothing behind.
    assert sorted(os.listdir(work.parent)) == sorted([*FILES, "empty"])


@pytest.mark.parametrize("args,stdin", [c[1:3] for c in CASES], ids=[c[0] for c in CASES])
def test_live_against_parallel(work, args, stdin):
    theirs = run_parallel(args, input=stdin, env={"SHELL": "/bin/sh"}, cwd=work)
    ours = run_gridmap(args, input=stdin, cwd=work)
    assert (ours.stdout, ours.returncode) == (theirs.stdout, theirs.returncode)


def test_regexp_pipepart_cuts_at_the_first_boundary(work):
    # gridmap(1): the first record start after each multiple of --block
    # (GNU parallel 20221122 takes the last one in what it has read).
    p = run_gridmap(["-k", "--regexp", "--recstart", "^>", "--pipepart", "-a", "../fasta",
                     "--block", "10", "cat; echo =="], cwd=work)
    assert p.stdout == b">a\n1\n22\n>b\n333\n==\n>c\n4\n>d\n55555\n==\n", p.stderr


def test_regexp_on_a_regular_file_is_read_as_a_stream(work):
    # Not cut by offsets: a regular expression needs the bytes.
    with open(work.parent / "fasta", "rb") as f:
        p = run_gridmap(["-k", "--regexp", "--recstart", "^>", "-N1", "--pipe", "head -1"],
                        stdin=f)
    assert p.stdout == b">a\n>b\n>c\n>d\n", p.stderr


def test_regexp_blocks_by_size(work):
    data = b"".join(b">r%d\nxxxxxxxx\n" % i for i in range(200))
    p = run_gridmap(["-k", "--regexp", "--recstart", "^>", "--block", "100", "--pipe",
                     "cat; echo =="], input=data)
    blocks = p.stdout.split(b"==\n")[:-1]
    assert b"".join(blocks) == data
    assert all(b.startswith(b">") and 0 < len(b) <= 100 for b in blocks), blocks[:3]


def test_cat_names_the_file_and_removes_it(work):
    tmp = work.parent
    p = run_gridmap(["-k", "-N1", "--cat", "test -f {} && cat {} && echo $PARALLEL_TMP"],
                    input=b"a\nb\n", env=dict(os.environ, TMPDIR=str(tmp)))
    lines = p.stdout.split(b"\n")
    assert lines[0] == b"a" and lines[2] == b"b", p.stdout
    assert lines[1].startswith(os.fsencode(tmp) + b"/gridmap-cat.")
    assert not os.path.exists(lines[1]) and not os.path.exists(lines[3])


def test_cat_fifo_through_a_shell_with_quotes(work):
    # {} inside single and double quotes still names the file.
    p = run_gridmap(["-k", "-N1", "--fifo", "cat '{}'; test -p \"{}\" && echo fifo"],
                    input=b"x\n")
    assert p.stdout == b"x\nfifo\n", p.stderr


@pytest.mark.parametrize("args,message", [
    (["--cat", "--fifo", "cat"], b"--cat does not go with --fifo"),
    (["--cat", "--round-robin", "cat"], b"--round-robin"),
    (["--skip-first-line", "--pipepart", "-a", "../hdr", "cat"], b"--skip-first-line"),
    (["--regexp", "--recstart", "(", "--pipe", "cat"], b"--regexp: bad"),
])
def test_refused_mixes(work, args, message):
    p = run_gridmap(args, input=b"a\n", cwd=work)
    assert p.returncode == 64 and message in p.stderr, p.stderr


def test_cat_fifo_and_perl_through_a_hub(grid):  # noqa: F811
    # The wrapper runs on the worker, which makes its own temporary file;
    # Perl values are computed where the template is expanded, in gridmap.
    grid.start_hub()
    grid.start_worker(slots=2)
    for opt in ("--cat", "--fifo"):
        p = grid.run("gridmap", "-k", "-N2", opt, "wc -l < {}", input=b"a\nb\nc\n")
        assert (p.stdout, p.returncode) == (b"2\n1\n", 0), (opt, p.stderr)
    if shutil.which("perl"):
        p = grid.run("gridmap", "-k", "echo", "{= $_ = uc =}", ":::", "a", "b c")
        assert (p.stdout, p.returncode) == (b"A\nB C\n", 0), p.stderr
