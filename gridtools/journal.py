"""The hub's sqlite journal of durable jobs (from gridsub).

A job is inserted before it is acknowledged, and its result is recorded
before anyone is told it; the hub calls commit() once per loop turn, so many
submissions or results share one fsync.  Output of durable jobs goes to
files beside the database, named by job id.
"""

import os
import sqlite3
import time

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    command   BLOB NOT NULL,
    argv      INTEGER NOT NULL DEFAULT 0,
    reqs      TEXT NOT NULL DEFAULT '',
    retries   INTEGER NOT NULL DEFAULT 0,
    timeout   REAL,
    submitted REAL NOT NULL,
    tries     INTEGER NOT NULL DEFAULT 0,
    state     TEXT NOT NULL DEFAULT 'queued',     -- queued | done
    exit      INTEGER,
    sig       INTEGER,
    outcome   TEXT,
    worker    TEXT,
    finished  REAL
);
"""


class Journal:
    def __init__(self, state_dir):
        self.dir = state_dir
        self.out_dir = os.path.join(state_dir, "out")
        os.makedirs(self.out_dir, mode=0o700, exist_ok=True)
        self.db = sqlite3.connect(os.path.join(state_dir, "journal.sqlite"),
                                  isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self.in_tx = False
        self.to_sync = []

    def _begin(self):
        if not self.in_tx:
            self.db.execute("BEGIN")
            self.in_tx = True

    def add(self, command, argv, reqs, retries, timeout):
        """Insert a queued job; its id.  Durable once commit() returns."""
        self._begin()
        cur = self.db.execute(
            "INSERT INTO jobs (command, argv, reqs, retries, timeout, submitted) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (command, int(argv), encode_reqs(reqs), retries, timeout, time.time()))
        return cur.lastrowid

    def finish(self, jid, tries, exitcode, sig, outcome, worker):
        self._begin()
        self.db.execute(
            "UPDATE jobs SET state='done', tries=?, exit=?, sig=?, outcome=?, worker=?, "
            "finished=? WHERE id=?",
            (tries, exitcode, sig, outcome, worker, time.time(), jid))
        for fd_no in (1, 2):
            path = self.out_path(jid, fd_no)
            if os.path.exists(path):
                self.to_sync.append(path)

    def forget(self, jid):
        self._begin()
        self.db.execute("DELETE FROM jobs WHERE id=? AND state='done'", (jid,))
        for fd_no in (1, 2):
            try:
                os.unlink(self.out_path(jid, fd_no))
            except FileNotFoundError:
                pass

    def commit(self):
        if not self.in_tx:
            return
        # Output files first: a committed result must find its output.
        for path in self.to_sync:
            try:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
            except OSError:
                pass
        self.to_sync.clear()
        self.db.execute("COMMIT")
        self.in_tx = False

    def queued(self):
        """Every job without a result, oldest first (for a restart)."""
        return self.db.execute(
            "SELECT id, command, argv, reqs, retries, timeout, tries FROM jobs "
            "WHERE state='queued' ORDER BY id").fetchall()

    def get(self, jid):
        row = self.db.execute(
            "SELECT id, command, argv, state, exit, sig, outcome, tries, worker, "
            "submitted, finished FROM jobs WHERE id=?", (jid,)).fetchone()
        if row is None:
            return None
        keys = ("id", "command", "argv", "state", "exit", "sig", "outcome", "tries",
                "worker", "submitted", "finished")
        return dict(zip(keys, row))

    def expire(self, older_than):
        """Forget results finished before the given time; how many."""
        rows = self.db.execute("SELECT id FROM jobs WHERE state='done' AND finished < ?",
                               (older_than,)).fetchall()
        for (jid,) in rows:
            self.forget(jid)
        self.commit()
        return len(rows)

    def out_path(self, jid, fd_no):
        return os.path.join(self.out_dir, f"{jid}.{fd_no}")

    def close(self):
        if self.in_tx:
            self.commit()
        self.db.close()


def encode_reqs(reqs):
    return "\n".join(f"{k}={v}" for k, v in sorted(reqs))


def decode_reqs(text):
    return frozenset(tuple(line.split("=", 1)) for line in text.split("\n") if "=" in line)
