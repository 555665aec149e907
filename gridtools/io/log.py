"""How every command and daemon says something on stderr: one line,
`prog: text`, flushed at once (a daemon's log is read live)."""

import sys


def logger(prog):
    """log(text) for prog, e.g. logger("gridd hub")("listening on ...")."""
    def log(text):
        sys.stderr.write(f"{prog}: {text}\n")
        sys.stderr.flush()
    return log
