"""gridmap --results FILE.csv|.tsv|.json (GNU parallel's result records)
and --csv (inputs read as CSV records): goldens recorded from GNU parallel
20221122 (each recorded twice, the same both times), and the same cases
compared live when `parallel` is on PATH.

The two time columns differ run to run: they are checked for their form
(three decimals) and then left out.
"""

import os
import re
import subprocess

import pytest

from conftest import run_gridmap, run_parallel

# (id, arguments with OUT for the results file's stem, stdin, kind, the
# records as GNU parallel wrote them (times as T and R), its stdout, its
# exit status).  With OUT.x the records are in the file; with -.x on stdout.
CASES = [
    ('csv_basic', ['-k', '--results', 'OUT.csv', 'echo {}; echo err >&2', ':::', 'a', 'b c', 'd"e', ''], b'', 'csv',
     b'Seq,Host,Starttime,JobRuntime,Send,Receive,Exitval,Signal,Command,V1,Stdout,Stderr\n1,:,T,R,0,2,0,0,"echo a; echo err >&2",a,"a\n","err\n"\n2,:,T,R,0,4,0,0,"echo \'b c\'; echo err >&2","b c","b c\n","err\n"\n3,:,T,R,0,4,0,0,"echo \'d""e\'; echo err >&2","d""e","d""e\n","err\n"\n4,:,T,R,0,1,0,0,"echo \'\'; echo err >&2",,"\n","err\n"\n',
     b'', 0),
    ('csv_failures', ['-k', '-j2', '--results', 'OUT.csv', 'printf %s {}; exit {#}', ':::', 'x', 'y y'], b'', 'csv',
     b'Seq,Host,Starttime,JobRuntime,Send,Receive,Exitval,Signal,Command,V1,Stdout,Stderr\n1,:,T,R,0,1,1,0,"printf %s x; exit 1",x,x,\n2,:,T,R,0,3,2,0,"printf %s \'y y\'; exit 2","y y","y y",\n',
     b'', 2),
    ('tsv_header', ['-k', '--header', ':', '--results', 'OUT.tsv', 'echo {A}-{B}', ':::', 'A', 'a', 'b\tc', ':::', 'B', '1'], b'', 'tsv',
     b'Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\tA\tB\tStdout\tStderr\n1\t:\tT\tR\t0\t4\t0\t0\t"echo a-1"\ta\t1\t"a-1\n"\t\n2\t:\tT\tR\t0\t4\t0\t0\t"echo b-c"\tb\tc\t1\t"b-c\n"\t\n',
     b'', 0),
    ('json_N2', ['-k', '-N2', '--results', 'OUT.json', "printf '%s|' {}", ':::', 'a', 'q"\\', 'c'], b'', 'json',
     b'{ "Seq": 1, "Host": ":", "Starttime": T, "JobRuntime": R, "Send": 0, "Receive": 6, "Exitval": 0, "Signal": 0, "Command": "printf \'%s|\' a \'q\\"\\\\\'", "V": [ "a","q\\"\\\\" ], "Stdout": "a|q\\"\\\\|", "Stderr": "" }\n{ "Seq": 2, "Host": ":", "Starttime": T, "JobRuntime": R, "Send": 0, "Receive": 2, "Exitval": 0, "Signal": 0, "Command": "printf \'%s|\' c", "V": [ "c" ], "Stdout": "c|", "Stderr": "" }\n',
     b'', 0),
    ('json_control', ['-k', '--results', 'OUT.json', "printf 'a\\tb\\001\\n'; printf '\\033' >&2", ':::', 'x'], b'', 'json',
     b'{ "Seq": 1, "Host": ":", "Starttime": T, "JobRuntime": R, "Send": 0, "Receive": 5, "Exitval": 0, "Signal": 0, "Command": "printf \'a\\\\tb\\\\001\\\\n\'; printf \'\\\\033\' >&2 x", "V": [ "x" ], "Stdout": "a\\u0009b\\u0001\\u000a", "Stderr": "\\u001b" }\n',
     b'', 0),
    ('json_signal', ['-k', '--results', 'OUT.json', 'echo {}; kill -9 $$', ':::', 's'], b'', 'json',
     b'{ "Seq": 1, "Host": ":", "Starttime": T, "JobRuntime": R, "Send": 0, "Receive": 2, "Exitval": 0, "Signal": 9, "Command": "echo s; kill -9 $$", "V": [ "s" ], "Stdout": "s\\u000a", "Stderr": "" }\n',
     b'', 1),
    ('csv_stdout', ['-k', '--results', '-.csv', 'echo {}; echo e >&2', ':::', 'a', 'b'], b'', 'csv',
     b'Seq,Host,Starttime,JobRuntime,Send,Receive,Exitval,Signal,Command,V1,Stdout,Stderr\n1,:,T,R,0,2,0,0,"echo a; echo e >&2",a,"a\n","e\n"\n2,:,T,R,0,2,0,0,"echo b; echo e >&2",b,"b\n","e\n"\n',
     b'', 0),
    ('tsv_stdout', ['-k', '--results', '-.tsv', 'echo', ':::', '1', '2', ':::', 'x'], b'', 'tsv',
     b'Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\tV1\tV2\tStdout\tStderr\n1\t:\tT\tR\t0\t4\t0\t0\t"echo 1 x"\t1\tx\t"1 x\n"\t\n2\t:\tT\tR\t0\t4\t0\t0\t"echo 2 x"\t2\tx\t"2 x\n"\t\n',
     b'', 0),
    ('json_stdout', ['-k', '--results', '-.json', 'echo'], b'l1\nl 2\n', 'json',
     b'{ "Seq": 1, "Host": ":", "Starttime": T, "JobRuntime": R, "Send": 0, "Receive": 3, "Exitval": 0, "Signal": 0, "Command": "echo l1", "V": [ "l1" ], "Stdout": "l1\\u000a", "Stderr": "" }\n{ "Seq": 2, "Host": ":", "Starttime": T, "JobRuntime": R, "Send": 0, "Receive": 4, "Exitval": 0, "Signal": 0, "Command": "echo \'l 2\'", "V": [ "l 2" ], "Stdout": "l 2\\u000a", "Stderr": "" }\n',
     b'', 0),
    ('csv_stdin_joblog', ['-k', '--results', 'OUT.csv', 'cat'], b'', 'csv',
     b'',
     b'', 0),
]


def normal(data, kind):
    """data with its time columns as T and R, after checking their form."""
    if kind == "json":
        rx = rb'"Starttime": [0-9]+\.[0-9]{3}, "JobRuntime": [0-9]+\.[0-9]{3}'
        return re.sub(rx, b'"Starttime": T, "JobRuntime": R', data)
    sep = b"," if kind == "csv" else b"\t"
    rx = (rb"(?m)^([0-9]+" + sep + rb"[^" + sep + rb"]*" + sep + rb")[0-9]+\.[0-9]{3}"
          + sep + rb"[0-9]+\.[0-9]{3}" + sep)
    return re.sub(rx, rb"\1T" + sep + rb"R" + sep, data)


def run(runner, tmp_path, args, stdin):
    """(exit status, stdout, the records) of one run in tmp_path."""
    stem = str(tmp_path / "r")
    args = [a.replace("OUT", stem) for a in args]
    p = runner(args, input=stdin, cwd=tmp_path, env=dict(os.environ, SHELL="/bin/sh"))
    files = [a for a in args if a.startswith(stem)]
    if files:
        with open(files[0], "rb") as f:
            return p.returncode, p.stdout, f.read(), p.stderr
    return p.returncode, b"", p.stdout, p.stderr


IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("args,stdin,kind,records,stdout,status",
                         [c[1:] for c in CASES], ids=IDS)
def test_results_golden(tmp_path, args, stdin, kind, records, stdout, status):
    code, out, data, err = run(run_gridmap, tmp_path, args, stdin)
    assert (code, out, normal(data, kind)) == (status, stdout, records), err


@pytest.mark.parametrize("args,stdin,kind", [c[1:4] for c in CASES], ids=IDS)
def test_results_live_against_parallel(tmp_path, args, stdin, kind):
    (tmp_path / "g").mkdir()
    (tmp_path / "p").mkdir()
    ours = run(run_gridmap, tmp_path / "g", args, stdin)
    theirs = run(run_parallel, tmp_path / "p", args, stdin)
    assert ours[:2] + (normal(ours[2], kind),) == theirs[:2] + (normal(theirs[2], kind),)


def test_results_file_that_cannot_be_made(tmp_path):
    p = run_gridmap(["--results", str(tmp_path / "no" / "x.csv"), "echo", ":::", "a"])
    assert p.returncode == 73 and p.stdout == b""
    assert p.stderr.startswith(b"gridmap: error: --results: cannot write ")


def test_results_table_goes_with_neither_files_nor_json(tmp_path):
    for extra in ("--files", "--json"):
        p = run_gridmap([extra, "--results", str(tmp_path / "x.tsv"), "echo", ":::", "a"])
        assert p.returncode == 64, p.stderr


def test_results_csv_reads_back_with_pythons_csv(tmp_path):
    """The records are CSV a strict reader takes: every byte of output,
    newlines and quotes included, comes back."""
    import csv
    out = tmp_path / "r.csv"
    p = run_gridmap(["-k", "--results", str(out), "printf", "'%s\\n\"x\"\\n'", ":::",
                     "a b", "c,d", ""])
    assert p.returncode == 0, p.stderr
    with open(out, newline="") as f:
        rows = list(csv.reader(f, strict=True))
    assert rows[0][-3:] == ["V1", "Stdout", "Stderr"]
    assert [r[9:] for r in rows[1:]] == [["a b", 'a b\n"x"\n', ""], ["c,d", 'c,d\n"x"\n', ""],
                                          ["", '\n"x"\n', ""]]


# --csv: inputs as CSV records (stdout goldens from GNU parallel 20221122,
# which needs Perl's Text::CSV for it).
CSV_CASES = [
    ('csv_quoted',
     ['-k', '--csv', 'echo', '[{1}]', '[{2}]', '[{3}]'],
     b'a,"b,c",d\n"x ""y""",z\n"multi\nline, too",q\n',
     b'[a] [b,c] [d]\n[x "y"] [z] []\n[multi\nline, too] [q] []\n', 0),
    ('csv_colsep_trims',
     ['-k', '--csv', '--colsep', ';', 'echo', '[{1}]', '[{2}]'],
     b' a ; b ;"c;d"\n',
     b'[a] [b]\n', 0),
    ('csv_no_trim',
     ['-k', '--csv', 'echo', '[{1}]', '[{2}]'],
     b' a , b \n\n',
     b'[ a ] [ b ]\n[] []\n', 0),
    ('csv_delimiter',
     ['-k', '--csv', '-d', '|', 'echo', '[{1}]', '[{2}]'],
     b'a,"b|c"|d,e|',
     b'[a] [b|c]\n[d] [e]\n', 0),
    ('csv_header',
     ['-k', '--header', ':', '--csv', 'echo', '{y}{x}'],
     b'x,y\n1,"2 3"\n4,5\n',
     b'2 31\n54\n', 0),
    ('csv_args',
     ['-k', '--csv', 'echo', '{2}/{1}', ':::', 'a,"b c"', 'x'],
     b'',
     b'b c/a\n/x\n', 0),
    ('csv_colsep_string',
     ['-k', '--csv', '--colsep', ';;', 'echo', '{2}'],
     b'a;;b;c\n',
     b'b;c\n', 0),
    ('csv_all_columns',
     ['-k', '--csv', 'echo'],
     b'1,2,3\n"4 5",6\n',
     b'1 2 3\n4 5 6\n', 0),
]


def _text_csv():
    """GNU parallel's --csv needs Perl's Text::CSV (libtext-csv-perl)."""
    p = subprocess.run(["perl", "-MText::CSV", "-e", "1"], capture_output=True)
    if p.returncode != 0:
        pytest.skip("Perl's Text::CSV is not installed (GNU parallel --csv needs it)")


@pytest.mark.parametrize("args,stdin,expected,status", [c[1:] for c in CSV_CASES],
                         ids=[c[0] for c in CSV_CASES])
def test_csv_golden(tmp_path, args, stdin, expected, status):
    # In an empty directory: a template word like [{1}] is a shell glob.
    p = run_gridmap(args, input=stdin, cwd=tmp_path)
    assert (p.stdout, p.returncode) == (expected, status), p.stderr


@pytest.mark.parametrize("args,stdin", [c[1:3] for c in CSV_CASES],
                         ids=[c[0] for c in CSV_CASES])
def test_csv_live_against_parallel(tmp_path, args, stdin):
    _text_csv()
    theirs = run_parallel(args, input=stdin, env={"SHELL": "/bin/sh"}, cwd=tmp_path)
    ours = run_gridmap(args, input=stdin, cwd=tmp_path)
    assert (ours.stdout, ours.returncode) == (theirs.stdout, theirs.returncode)


@pytest.mark.parametrize("stdin", [b'a"b,c\n', b'"a"b,c\n', b'ok\n"never closed\n'])
def test_csv_refuses_what_is_not_csv(tmp_path, stdin):
    """GNU parallel dies (255); gridmap exits 65 after the jobs before the
    bad record, as for other bad input."""
    p = run_gridmap(["-k", "--csv", "echo", "[{1}]"], input=stdin, cwd=tmp_path)
    assert p.returncode == 65
    assert b"gridmap: error: --csv: CSV has unexpected format" in p.stderr
    assert p.stdout == (b"[ok]\n" if stdin.startswith(b"ok") else b"")


def test_csv_needs_a_separator_and_no_pipe():
    assert run_gridmap(["--csv", "--pipe", "cat"]).returncode == 64


def test_csv_parse_units():
    from gridtools.local import csvin
    assert csvin.parse('a,"b,""c""",') == ("a", 'b,"c"', "")
    assert csvin.parse("") == ("",)
    assert csvin.parse('"x\ny"') == ("x\ny",)
    assert csvin.parse("a\tb", "\t") == ("a", "b")
    j = csvin.Joiner("\n")
    assert j.feed(['a,"b', 'c"', "d"]) == ['a,"b\nc"', "d"]
    assert j.feed(['"open']) == [] and j.finish() == ['"open']
