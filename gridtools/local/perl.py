"""The Perl coprocess that computes {= ... =} and --rpl values: one perl
per run, started only when the template holds a Perl expression, asked
once per job for all of that job's values.

The protocol, on the coprocess's own stdin and stdout (the user's code
sees /dev/null and stderr there instead, so a print cannot corrupt it):
one line each way, fields separated by one space, every string sent as
hex of its bytes, so no value can break a line.

    D CODE                        define expression number N (0, 1, ...)
      -> K | E MESSAGE            compiled, or Perl's compile error
    J SEQ SLOT TOTAL N ARG*N P (EXPR INPUT)*P
      -> V VALUE*P | E MESSAGE    each VALUE is hex, then q (quote it)
                                  or u (uq() was called); or the error
                                  the code died with

The code runs as GNU parallel runs it: in package Arg, $_ is the input,
$job->seq() and $job->slot(), seq(), slot(), total_jobs(), @arg (the
job's inputs from $arg[1]), Q() (quoted as gridmap quotes), pQ(), uq().
"""

import os
import re
import shutil
import subprocess

from gridtools.proto import errors

SCRIPT = r"""
use strict;
open(my $in, "<&", \*STDIN) or die; open(my $out, ">&", \*STDOUT) or die;
open(STDIN, "<", "/dev/null"); open(STDOUT, ">&", \*STDERR);
select((select($out), $| = 1)[0]);
sub hx { my $s = shift; utf8::encode($s) if utf8::is_utf8($s); unpack("H*", $s) }
sub unhx { pack("H*", shift) }
package Job;
sub seq { $_[0]{seq} }
sub slot { $_[0]{slot} }
package Arg;
our (@arg, $total, $unquote, $job);
sub Q { my $s = shift; $s = "" unless defined $s;
        return "''" if $s eq ""; return $s if $s =~ m{^[A-Za-z0-9_\@%+=:,./-]+\z};
        $s =~ s/'/'"'"'/g; "'$s'" }
sub pQ { my $s = shift; $s =~ s/[\\\"\$\@]/\\$&/g; $s }
sub uq { $unquote = 1 }
sub total_jobs { $total }
sub seq { $job->seq() }
sub slot { $job->slot() }
sub skip { die "skip() is not supported by gridmap\n" }
package main;
my @subs;
while (defined(my $line = <$in>)) {
    chomp $line;
    my @f = split / /, $line, -1;
    my $verb = shift @f;
    if ($verb eq "D") {
        my $code = unhx($f[0]);
        my $sub = eval "package Arg; no strict; no warnings; sub { my \$job = shift; $code\n}";
        if ($sub) { push @subs, $sub; print $out "K\n" }
        else { print $out "E ", hx($@), "\n" }
    } elsif ($verb eq "J") {
        my ($seq, $slot, $total, $n) = splice @f, 0, 4;
        my @args = map { unhx($_) } splice @f, 0, $n;
        my $job = bless { seq => $seq, slot => $slot }, "Job";
        ($Arg::job, $Arg::total, @Arg::arg) = ($job, $total, undef, @args);
        my $np = shift @f;
        my @vals;
        my $ok = eval {
            for my $k (1 .. $np) {
                my ($i, $v) = splice @f, 0, 2;
                local $_ = unhx($v);
                $Arg::unquote = 0;
                $subs[$i]->($job);
                push @vals, hx(defined $_ ? "$_" : "") . ($Arg::unquote ? "u" : "q");
            }
            1;
        };
        print $out ($ok ? join(" ", "V", @vals) : "E " . hx($@)), "\n";
    }
}
"""


class Coprocess:
    """One perl for the run, holding the compiled expressions.

    option names what brought Perl in ({= =} or --rpl), for the errors.
    """

    def __init__(self, codes, option, env=None):
        perl = shutil.which("perl", path=(env or os.environ).get("PATH"))
        if perl is None:
            raise errors.UsageError(f"{option}: needs perl, which is not on PATH")
        # A session of its own: the terminal's ^C is gridmap's to handle;
        # perl ends when gridmap closes the pipe.
        self.proc = subprocess.Popen([perl, "-e", SCRIPT], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, start_new_session=True)
        self.option = option
        self.codes = list(codes)
        for code in self.codes:
            reply = self._ask(b"D " + _hex(code))
            if reply != b"K":
                raise errors.UsageError(f"{option}: cannot use {code.strip()!r}: "
                                        f"{_message(reply)}")

    def evaluate(self, seq, slot, total, args, pairs):
        """[(value, unquoted)] for each (expression, input) in pairs."""
        fields = [b"J", b"%d" % seq, b"%d" % slot, b"%d" % total, b"%d" % len(args)]
        fields += [_hex(a) for a in args]
        fields.append(b"%d" % len(pairs))
        for index, value in pairs:
            fields += [b"%d" % index, _hex(value)]
        reply = self._ask(b" ".join(fields))
        words = reply.split(b" ")
        if words[0] != b"V" or len(words) != len(pairs) + 1 or \
                not all(_VALUE.fullmatch(w) for w in words[1:]):
            codes = "; ".join(self.codes[i].strip() for i in sorted({i for i, _ in pairs}))
            raise errors.DataError(f"{self.option} {codes!r} at input {seq}: "
                                   f"{_message(reply)}")
        return [(os.fsdecode(bytes.fromhex(w[:-1].decode())), w.endswith(b"u"))
                for w in words[1:]]

    def _ask(self, line):
        try:
            self.proc.stdin.write(line + b"\n")
            self.proc.stdin.flush()
            reply = self.proc.stdout.readline()
        except OSError:
            reply = b""
        if not reply.endswith(b"\n"):
            raise errors.GridError(f"{self.option}: perl ended unexpectedly",
                                   errors.SOFTWARE)
        return reply[:-1]

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()
        self.proc.stdout.close()


_VALUE = re.compile(rb"(?:[0-9a-f]{2})*[qu]")


def _hex(text):
    return os.fsencode(text).hex().encode()


def _message(reply):
    """Perl's error from an E reply, on one line."""
    if reply.startswith(b"E ") and re.fullmatch(rb"(?:[0-9a-f]{2})*", reply[2:]):
        text = bytes.fromhex(reply[2:].decode()).decode("utf-8", "replace")
    else:
        text = f"unexpected reply {reply[:80]!r}"
    return " ".join(text.split())
