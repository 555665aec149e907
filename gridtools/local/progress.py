"""--progress and --eta: GNU parallel's progress report on stderr, whether
or not it is a terminal (as GNU parallel writes it): a table of the
computers first, then one status line redrawn with a carriage return as
jobs start and end (and every second while they run), and a newline at
the end.  Pure formatting plus a clock; the pool writes the text.

    Computer:jobs running/jobs completed/%of started jobs/Average seconds to complete
    ETA: 12s Left: 40 AVG: 0.30s  local:2/58/100%/0.3s

The jobs of the local pool count as "local"; through a hub or -S, all the
hosts count together, under the name given.
"""

import time

HEAD = "Computer:jobs running/jobs completed/%of started jobs/Average seconds to complete\n"


def header(label, cores, slots):
    """The table GNU parallel prints first."""
    return ("\nComputers / CPU cores / Max jobs to run\n"
            f"1:{label} / {cores} / {slots}\n\n" + HEAD)


class Report:
    """The status line, with GNU parallel's arithmetic: whole seconds of
    the wall clock, and an ETA smoothed as it smooths it."""

    def __init__(self, label="local", eta=False, clock=time.time):
        self.label = label
        self.eta = eta
        self.clock = clock
        self.t0 = int(clock())
        self.total = 0              # --eta: all the jobs (read ahead)
        self.first_done = None
        self.smoothed = None
        self.last_eta = 0

    def eta_text(self, completed):
        total = max(self.total, completed)
        left = total - completed
        if not completed:
            return f"ETA: 0s Left: {left} AVG: 0.00s  "
        now = int(self.clock())
        part = min(completed / total, 100)
        if self.first_done is None:
            self.first_done = now
        avg = (now - self.first_done) / completed
        if self.smoothed is None:
            self.smoothed = avg
        self.smoothed = (1 - part) * self.smoothed + part * avg
        eta = int(left * self.smoothed)
        if eta * 0.90 < self.last_eta < eta:
            eta = self.last_eta     # up by less than 10%: keep the last one
        else:
            self.last_eta = eta
        return f"ETA: {eta}s Left: {left} AVG: {avg:.2f}s  "

    def line(self, running, completed, started):
        """The status, without the carriage return."""
        text = self.eta_text(completed) if self.eta else ""
        if started:
            avg = (int(self.clock()) - self.t0) / completed if completed else 0
            text += "%s:%d/%d/%d%%/%.1fs " % (self.label, running, completed,
                                             (running + completed) * 100 / started, avg)
        return text
