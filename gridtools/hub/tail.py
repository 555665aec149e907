"""A durable job's stored output followed like tail -f, as the messages a
RESULT's follower is sent: OUT for each piece, then the DONE from the
journal.  A generator the server pumps as the follower's buffer drains."""

import os

from gridtools.hub import sched
from gridtools.proto import wire


def follow(journal, did, job):
    """OUT messages from a durable job's stored output, like tail -f,
    then its DONE once the result is in the journal.  Yields None when
    there is nothing more yet (the job's next output wakes us).

    Only the last try's output is sent, once: a try that may still be
    retried is held back, and its files are read only if the job ends
    with it (they hold that try's output alone: a new try starts them
    afresh).  A try that cannot be retried is followed live."""
    offsets = {1: 0, 2: 0}
    files = {}
    attempt = None
    try:
        while True:
            finished = job is None or job.committed
            if not finished and not last_try_running(job):
                yield None          # queued, or a try that may be retried
                continue
            if job is not None and job.attempt != attempt:
                attempt = job.attempt
                for f in files.values():
                    os.close(f)
                files.clear()
                offsets = {1: 0, 2: 0}
            progressed = False
            for fd_no in (1, 2):
                fd = files.get(fd_no)
                if fd is None:
                    try:
                        fd = files[fd_no] = os.open(journal.out_path(did, fd_no),
                                                    os.O_RDONLY | os.O_CLOEXEC)
                    except FileNotFoundError:
                        continue
                data = os.pread(fd, 1 << 18, offsets[fd_no])
                if data:
                    offsets[fd_no] += len(data)
                    progressed = True
                    yield wire.format("OUT", did, fd=fd_no, body=data)
            if progressed:
                continue
            if finished:
                break
            yield None
    finally:
        for f in files.values():
            os.close(f)
    row = journal.get(did)
    if row is None:
        yield wire.error(wire.E_DATA, f"no such job {did}", job=did)
        return
    yield wire.format("DONE", did, exit=row["exit"], sig=row["sig"],
                      outcome=row["outcome"], tries=row["tries"], worker=row["worker"],
                      note=row["note"])


def last_try_running(job):
    """True while job runs a try the hub will not retry: its output is the
    result's, and may be followed live.  (After a hub restart a job's tries
    count from 0 again: its first try then is not the last.)"""
    return job.state == sched.RUNNING and job.tries > job.retries
