"""gridmap against GNU parallel: golden outputs recorded from GNU parallel
20221122 for documented cases, and, when `parallel` is on PATH, the same
cases compared live.

Deliberate differences, not tested here (see gridmap(1)):
- {%} is the slot that ran the job: which slot is free first depends on
  timing in both tools, so it is not compared;
- --pipe block sizes: GNU parallel's blocks are approximate; gridmap's end
  at the last record boundary within --block (see test_gridmap_pipe.py).

Quirks of GNU parallel 20221122 that gridmap does not copy (found by
comparing random option mixes): a negative position past the inputs
({-2//} with one input) takes a value there, while gridmap gives nothing,
as for a positive one; with -N0, {//} gives "." and x{}y gives "xy xy";
{#} in --tagstring can show another job's number.  --dry-run lines may
differ in spacing where a word vanished and in quoting that changes
nothing (GNU parallel quotes "a,b"; gridmap uses shlex.quote).
"""

import re

import pytest

from conftest import run_gridmap, run_parallel

# (id, arguments, stdin, GNU parallel's stdout, its exit status).  Every case
# that depends on the number of job slots gives -j, so the goldens hold on
# machines with any number of cores.
CASES = [
    ('modifiers',
     ['-k', 'echo', '{}', '{.}', '{/}', '{//}', '{/.}', ':::', 'a/b.c/d.e.f', '/x/y.tar.gz', 'foo', 'dir/', '/', './rel.txt', 'a//b.c'],
     b'',
     b'a/b.c/d.e.f a/b.c/d.e d.e.f a/b.c d.e\n/x/y.tar.gz /x/y.tar y.tar.gz /x y.tar\nfoo foo foo . foo\ndir/ dir/  . \n/ /  / \n./rel.txt ./rel rel.txt . rel\na//b.c a//b b.c a b\n', 0),
    ('positional',
     ['-k', 'echo', '{2}', '{1}', '{-1}', '{1/.}', '{2//}', '{-2/}', ':::', '/a/b.c', 'd.e', ':::', '/f/g.h'],
     b'',
     b'/f/g.h /a/b.c /f/g.h b /f b.c\n/f/g.h d.e /f/g.h d /f d.e\n', 0),
    ('product',
     ['-k', 'echo', ':::', 'a', 'b', ':::', '1', '2', '3'],
     b'',
     b'a 1\na 2\na 3\nb 1\nb 2\nb 3\n', 0),
    ('product3',
     ['-k', 'echo', '{3}{2}{1}', ':::', 'a', 'b', ':::', '1', '2', ':::', 'x', 'y'],
     b'',
     b'x1a\ny1a\nx2a\ny2a\nx1b\ny1b\nx2b\ny2b\n', 0),
    ('linked',
     ['-k', 'echo', ':::', 'a', 'b', 'c', ':::+', '1', '2', '3'],
     b'',
     b'a 1\nb 2\nc 3\n', 0),
    ('linked_short',
     ['-k', 'echo', ':::', 'a', 'b', ':::+', '1', '2', '3'],
     b'',
     b'a 1\nb 2\n', 0),
    ('linked_product',
     ['-k', 'echo', ':::', 'a', 'b', ':::+', '1', '2', ':::', 'x', 'y'],
     b'',
     b'a 1 x\na 1 y\nb 2 x\nb 2 y\n', 0),
    ('stdin_lines',
     ['-k', 'echo', 'x{}y'],
     b'a\n\nb\nlast',
     b'xay\nxy\nxby\nxlasty\n', 0),
    ('stdin_appended',
     ['-k', 'echo', 'pre'],
     b'a b\nc\n',
     b'pre a b\npre c\n', 0),
    ('file_and_list',
     ['-k', 'echo', ':::', 'L1', 'L2', '::::', '-'],
     b's1\ns2\n',
     b'L1 s1\nL1 s2\nL2 s1\nL2 s2\n', 0),
    ('arg_file_stdin',
     ['-k', '-a', '-', 'echo', '[{}]'],
     b'one\n\nthree\n',
     b'[one]\n[]\n[three]\n', 0),
    ('null',
     ['-0', '-k', 'echo', '[{}]'],
     b'a\nb\x00c d\x00\x00e',
     b'[a\nb]\n[c d]\n[]\n[e]\n', 0),
    ('delim_colon',
     ['-d', ':', '-k', 'echo', '[{}]'],
     b'a:b::c\n',
     b'[a]\n[b]\n[]\n[c\n]\n', 0),
    ('delim_tab',
     ['-d', '\\t', '-k', 'echo', '[{}]'],
     b'a\tb c\t',
     b'[a]\n[b c]\n', 0),
    ('colsep',
     ['--colsep', ',', '-k', 'echo', '{2}', '{1}', '{-1}'],
     b'a,b,c\nd,e\n',
     b'b a c\ne d e\n', 0),
    ('colsep_regex',
     ['--colsep', '[,;]+', '-k', 'echo', '{3}-{2}-{1}'],
     b'a,,b;c\n',
     b'c-b-a\n', 0),
    ('colsep_all',
     ['--colsep', ',', '-k', 'echo'],
     b'a,b\nc,d,e\n',
     b'a b\nc d e\n', 0),
    ('colsep_implies_trim',
     ['-k', '--colsep', ',', 'echo', 'x{1}y', 'x{2}y'],
     b' a , b \n c,d\n',
     b'xay xby\nxcy xdy\n', 0),
    ('colsep_trim_n',
     ['-k', '--colsep', ',', '--trim', 'n', 'echo', 'x{1}y', 'x{2}y'],
     b' a , b \n',
     b'x a y x b y\n', 0),
    ('dry_run_tag',
     ['-k', '--dry-run', '--tag', 'echo', ':::', 'a', 'b c'],
     b'',
     b"a\techo a\nb c\techo 'b c'\n", 0),
    ('dry_run_tagstring',
     ['-k', '--dry-run', '--tagstring', '{#}-{/}', 'echo', ':::', 'x/a', 'b c'],
     b'',
     b"1-a\techo x/a\n2-b c\techo 'b c'\n", 0),
    ('trim_lr',
     ['--trim', 'lr', '-k', 'echo', '[{}]'],
     b'  a  \n\tb\t\n',
     b'[a]\n[b]\n', 0),
    ('trim_l',
     ['--trim', 'l', '-k', 'echo', '[{}]'],
     b'  a  \n\tb\t\n',
     b'[a  ]\n[b\t]\n', 0),
    ('trim_r',
     ['--trim', 'r', '-k', 'echo', '[{}]'],
     b'  a  \n\tb\t\n',
     b'[  a]\n[\tb]\n', 0),
    ('trim_colsep',
     ['--trim', 'lr', '--colsep', ',', '-k', 'echo', '[{1}][{2}]'],
     b' a , b \n',
     b'[a][b]\n', 0),
    ('n2',
     ['-k', '-n', '2', 'echo', ':::', '1', '2', '3', '4', '5'],
     b'',
     b'1 2\n3 4\n5\n', 0),
    ('N2',
     ['-k', '-N', '2', 'echo', '{1}-{2}', ':::', '1', '2', '3', '4', '5'],
     b'',
     b'1-2\n3-4\n5-\n', 0),
    ('N2_append',
     ['-k', '-N', '2', 'echo', ':::', '1', '2', '3', '4', '5'],
     b'',
     b'1 2\n3 4\n5\n', 0),
    ('N2_missing',
     ['-k', '-N2', 'printf', '[%s]', '{1}', '{2}', ';', 'echo', ':::', 'a', 'b', 'c'],
     b'',
     b'[a][b]\n[c]\n', 0),
    ('positional_missing',
     ['-k', 'echo', '{3}', 'z', ':::', 'a', ':::', 'b'],
     b'',
     b'z\n', 0),
    ('N_implies_X',
     ['-k', '-N', '3', 'echo', 'x{}y', ':::', 'm/', 'b.c', ':::', 'd/e.f', 'k.'],
     b'',
     b'xm/y xd/e.fy xm/y xk.y xb.cy xd/e.fy\nxb.cy xk.y\n', 0),
    ('n_no_context',
     ['-k', '-n', '2', 'echo', 'x{}y'],
     b'a\nb\nc\n',
     b'xa by\nxcy\n', 0),
    ('N_with_m',
     ['-k', '-N', '2', '-m', 'echo', 'x{}y', ':::', 'a', 'b', 'c'],
     b'',
     b'xay xby\nxcy\n', 0),
    ('two_sources_no_context',
     ['-k', 'echo', 'x{}y', ':::', 'a', 'b', ':::', '1'],
     b'',
     b'xa 1y\nxb 1y\n', 0),
    ('N0',
     ['-k', '-N0', 'echo', 'x', ':::', 'a', 'b'],
     b'',
     b'x\nx\n', 0),
    ('X_j2',
     ['-k', '-j2', '-X', 'echo', 'a{}b', ':::', '1', '2', '3', '4', '5'],
     b'',
     b'a1b a2b a3b\na4b a5b\n', 0),
    ('m_j2',
     ['-k', '-j2', '-m', 'echo', 'a{}b', ':::', '1', '2', '3', '4', '5'],
     b'',
     b'a1 2 3b\na4 5b\n', 0),
    ('X_j3',
     ['-k', '-j3', '-X', 'echo', ':::', '1', '2', '3', '4', '5', '6', '7'],
     b'',
     b'1 2 3\n4 5 6\n7\n', 0),
    ('m_j3',
     ['-k', '-j3', '-m', 'echo', ':::', '1', '2', '3', '4', '5', '6', '7'],
     b'',
     b'1 2 3\n4 5 6\n7\n', 0),
    ('X_j1_stdin',
     ['-k', '-j1', '-X', 'echo', 'x{}y', '{#}'],
     b'a\nb\nc\n',
     b'xay xby xcy 1\n', 0),
    ('tag',
     ['-k', '--tag', 'echo', 'out', ':::', 'a', 'b c'],
     b'',
     b'a\tout a\nb c\tout b c\n', 0),
    ('tag_multiline',
     ['-k', '--tag', "printf 'l1\\nl2\\n'; true", ':::', 'x'],
     b'',
     b'x\tl1\nx\tl2\n', 0),
    ('tag_two_sources',
     ['-k', '--tag', 'echo', ':::', 'a', 'b', ':::', '1'],
     b'',
     b'a 1\ta 1\nb 1\tb 1\n', 0),
    ('tagstring',
     ['-k', '--tagstring', 'T{#}:{}', 'echo', ':::', 'a', 'b'],
     b'',
     b'T1:a\ta\nT2:b\tb\n', 0),
    ('tagstring_pos',
     ['-k', '--tagstring', '{2}/{1.}', 'echo', 'x', ':::', 'a.c', 'b.d', ':::', '1'],
     b'',
     b'1/a\tx a.c 1\n1/b\tx b.d 1\n', 0),
    ('dry_run_quoting',
     ['--dry-run', '-k', 'echo', ':::', 'a b', "it's", '$(id)', '`x`', '-n', '', 'a"b', '\\', '~', '*'],
     b'',
     b'echo \'a b\'\necho \'it\'"\'"\'s\'\necho \'$(id)\'\necho \'`x`\'\necho -n\necho \'\'\necho \'a"b\'\necho \'\\\'\necho \'~\'\necho \'*\'\n', 0),
    ('dry_run_X',
     ['--dry-run', '-k', '-j1', '-X', 'echo', 'a{}b', ':::', '1', '2 3'],
     b'',
     b"echo a1b a'2 3'b\n", 0),
    ('dry_run_stdin',
     ['--dry-run', 'echo', '{}'],
     b'x; rm -rf ~\n$(reboot)\n',
     b"echo 'x; rm -rf ~'\necho '$(reboot)'\n", 0),
    ('seq',
     ['-k', 'echo', '{#}', '{}', ':::', 'a', 'b', 'c'],
     b'',
     b'1 a\n2 b\n3 c\n', 0),
    ('commands_from_input',
     ['-k'],
     b'echo a; echo b\necho "c  d"\nprintf \'%s\\n\' x y\n',
     b'a\nb\nc  d\nx\ny\n', 0),
    ('exit_status',
     ['-k', 'exit {}', ':::', '0', '1', '2', '0'],
     b'',
     b'', 2),
    ('hostile_echo',
     ['-k', 'echo'],
     b'x; echo PWNED\n$(echo PWNED)\n`echo PWNED`\n"q\'\n-n\n\n',
     b'x; echo PWNED\n$(echo PWNED)\n`echo PWNED`\n"q\'\n\n', 0),
    ('nonutf8',
     ['-k', 'echo', '[{}]'],
     b'\xff\xfe\nok\n',
     b'[\xff\xfe]\n[ok]\n', 0),
    ('empty_line_only',
     ['-k', 'echo', '[{}]'],
     b'\n',
     b'[]\n', 0),
    # Renamed strings, --skip-first-line and --cat (more in
    # test_gridmap_replace.py and test_gridmap_pipe_gnu.py).
    ('er_bnr_dnr',
     ['-k', '--er', 'E', '--bnr', 'B', '--dnr', 'D', 'echo', 'E', 'B', 'D', '{.}', ':::', 'a/b.c', 'x'],
     b'',
     b'a/b b.c a {.}\nx x . {.}\n', 0),
    ('I_braces_positional',
     ['-k', '-I', '{x}', 'echo', '{x}', '{2x}', '{}', ':::', 'a', 'b', ':::', 'c'],
     b'',
     b'a c c {}\nb c c {}\n', 0),
    ('skip_first_line_exit',
     ['-k', '--skip-first-line', 'exit'],
     b'9\n0\n2\n3\n',
     b'', 2),
    ('cat_exit',
     ['-k', '-N1', '--cat', 'read x < {}; echo $x; exit $x'],
     b'0\n4\n0\n',
     b'0\n4\n0\n', 1),
]


@pytest.mark.parametrize("args,stdin,expected,status",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_golden(tmp_path, args, stdin, expected, status):
    # In an empty directory: a template word like [{}] is a shell glob.
    p = run_gridmap(args, input=stdin, cwd=tmp_path)
    assert (p.stdout, p.returncode) == (expected, status), p.stderr


@pytest.mark.parametrize("args,stdin", [c[1:3] for c in CASES], ids=[c[0] for c in CASES])
def test_live_against_parallel(tmp_path, args, stdin):
    theirs = run_parallel(args, input=stdin, env={"SHELL": "/bin/sh"}, cwd=tmp_path)
    ours = run_gridmap(args, input=stdin, cwd=tmp_path)
    assert (ours.stdout, ours.returncode) == (theirs.stdout, theirs.returncode)


# The joblog: every column but the two times, which must be well formed.
JOBLOG_CASES = [
    ("exits",
     ["-k", "-j2", "printf {}; exit {#}", ":::", "ab", "c d", ""], b"",
     "Seq\tHost\tSend\tReceive\tExitval\tSignal\tCommand\n"
     "1\t:\t0\t2\t1\t0\tprintf ab; exit 1\n"
     "2\t:\t0\t3\t2\t0\tprintf 'c d'; exit 2\n"
     "3\t:\t0\t0\t3\t0\tprintf ''; exit 3\n", 3),
    ("pipe_send",
     ["-k", "--pipe", "--block", "3", "cat; echo"], b"ab\ncd\nef\n",
     "Seq\tHost\tSend\tReceive\tExitval\tSignal\tCommand\n"
     "1\t:\t3\t4\t0\t0\tcat; echo\n"
     "2\t:\t3\t4\t0\t0\tcat; echo\n"
     "3\t:\t3\t4\t0\t0\tcat; echo\n", 0),
]

HEADER = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n"


def joblog_columns(text):
    """The joblog without its two time columns, after checking their form."""
    lines = text.splitlines(keepends=True)
    assert lines[0] == HEADER
    out = []
    for line in lines:
        cols = line.split("\t")
        if line != HEADER:
            assert re.fullmatch(r"[0-9]+\.[0-9]{3}", cols[2]), line
            assert re.fullmatch(r" *[0-9]+\.[0-9]{3}", cols[3]) and len(cols[3]) >= 10, line
        out.append("\t".join(cols[:2] + cols[4:]))
    return "".join(out)


@pytest.mark.parametrize("args,stdin,expected,status",
                         [c[1:] for c in JOBLOG_CASES], ids=[c[0] for c in JOBLOG_CASES])
def test_joblog_golden(tmp_path, args, stdin, expected, status):
    log = tmp_path / "log"
    p = run_gridmap(["--joblog", str(log), *args], input=stdin)
    assert p.returncode == status, p.stderr
    assert joblog_columns(log.read_text()) == expected


@pytest.mark.parametrize("args,stdin", [c[1:3] for c in JOBLOG_CASES],
                         ids=[c[0] for c in JOBLOG_CASES])
def test_joblog_live_against_parallel(tmp_path, args, stdin):
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    pt = run_parallel(["--joblog", str(theirs), *args], input=stdin)
    po = run_gridmap(["--joblog", str(ours), *args], input=stdin)
    assert (po.stdout, po.returncode) == (pt.stdout, pt.returncode)
    assert joblog_columns(ours.read_text()) == joblog_columns(theirs.read_text())
