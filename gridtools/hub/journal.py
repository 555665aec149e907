"""The hub's sqlite journal of durable jobs (from gridsub).

A job is inserted before it is acknowledged, and its result is recorded
before anyone is told it; the hub calls commit() once per loop turn, so many
submissions or results share one fsync.  Output of durable jobs goes to
files beside the database, named by job id.

A journal that cannot write (a full disk, an I/O error) raises JournalError
from commit(), after rolling the transaction back: the hub then refuses what
it could not store (ERR 75) and keeps serving everything else.  A journal
that cannot even be opened for writing at start-up opens read-only, so the
hub still starts, requeues what it holds and serves stored results.
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
# The streams service (gridcat): queue messages acknowledged to their
# producer, and durable topics with their retained messages and the offsets
# of their named subscriptions.
STREAMS_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue_msgs (
    id        INTEGER PRIMARY KEY,
    queue     TEXT NOT NULL,
    data      BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS topics (
    name      TEXT PRIMARY KEY,
    keep      INTEGER NOT NULL,
    keepbytes INTEGER NOT NULL,
    keepage   REAL
);
CREATE TABLE IF NOT EXISTS topic_msgs (
    topic     TEXT NOT NULL,
    off       INTEGER NOT NULL,
    t         REAL NOT NULL,
    data      BLOB NOT NULL,
    PRIMARY KEY (topic, off)
);
CREATE TABLE IF NOT EXISTS topic_subs (
    topic     TEXT NOT NULL,
    name      TEXT NOT NULL,
    off       INTEGER NOT NULL,
    PRIMARY KEY (topic, name)
);
"""
# Added after the first release: why a result is not what the job said.
NOTE_COLUMN = "ALTER TABLE jobs ADD COLUMN note TEXT"


class JournalError(Exception):
    """The journal could not store what it was given (nothing was kept)."""


class Journal:
    def __init__(self, state_dir):
        self.dir = state_dir
        self.out_dir = os.path.join(state_dir, "out")
        self.path = os.path.join(state_dir, "journal.sqlite")
        try:
            os.makedirs(self.out_dir, mode=0o700, exist_ok=True)
        except OSError:
            pass                    # a full disk: read-only below, retried later
        self.in_tx = False
        self.rolled_back = False    # a transaction was undone (see take_rolled_back)
        self.to_sync = []           # (job id, output file) to fdatasync before COMMIT
        self.problem = None         # why the journal is read-only, or None
        self.db = None
        try:
            self._open()
        except sqlite3.Error as e:
            self._open_read_only(e)
        else:
            self.problem = "cannot write: not yet tried"
            self.retry_write()      # a full disk is said at start-up, not at the first job

    def _open(self):
        db = self._connect(self.path)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(SCHEMA + STREAMS_SCHEMA)
            columns = [row[1] for row in db.execute("PRAGMA table_info(jobs)")]
            if "note" not in columns:
                db.execute(NOTE_COLUMN)
        except BaseException:
            db.close()
            raise
        if self.db is not None:
            self.db.close()
        self.db = db
        self.problem = None

    def _open_read_only(self, why):
        """Serve what is stored until writing works again (retry_write);
        with no journal file yet there is nothing stored: an empty one in
        memory stands in."""
        if os.path.exists(self.path):
            self.db = self._connect(self.path)
        else:
            self.db = sqlite3.connect(":memory:", isolation_level=None)
            self.db.executescript(SCHEMA + STREAMS_SCHEMA)
            self.db.execute(NOTE_COLUMN)
        self.problem = f"read-only: {why}"

    @staticmethod
    def _connect(path):
        """Exclusive locking: the hub is the journal's only user (the state
        dir is locked), and in this mode sqlite keeps the WAL index in
        memory, so a journal on a full disk can still be read."""
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        return db

    @property
    def writable(self):
        return self.problem is None

    def retry_write(self):
        """After a failure: can we write again?  True once we can."""
        if self.problem is None:
            return True
        try:
            if self.problem.startswith("read-only"):
                self._open()
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("PRAGMA user_version = 1")
            self.db.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            if not self.problem.startswith("read-only"):
                self.problem = f"cannot write: {e}"
            return False
        self.problem = None
        return True

    def _begin(self):
        if self.problem is not None:
            raise JournalError(f"journal {self.problem}")
        if not self.in_tx:
            try:
                self.db.execute("BEGIN")
            except sqlite3.Error as e:
                raise JournalError(f"journal cannot write: {e}") from None
            self.in_tx = True

    def _rollback(self):
        """Undo this turn's writes; the caller's promises made on them
        must be withdrawn too (rolled_back tells it, until it reads it)."""
        self.to_sync.clear()
        self.rolled_back = self.in_tx or self.rolled_back
        self.in_tx = False
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass                    # no transaction left to roll back

    def add(self, command, argv, reqs, retries, timeout):
        """Insert a queued job; its id.  Durable once commit() returns."""
        self._begin()
        cur = self._write(
            "INSERT INTO jobs (command, argv, reqs, retries, timeout, submitted) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (command, int(argv), encode_reqs(reqs), retries, timeout, time.time()))
        return cur.lastrowid

    def finish(self, jid, tries, exitcode, sig, outcome, worker, note=None):
        self._begin()
        self._write(
            "UPDATE jobs SET state='done', tries=?, exit=?, sig=?, outcome=?, worker=?, "
            "finished=?, note=? WHERE id=?",
            (tries, exitcode, sig, outcome, worker, time.time(), note, jid))
        for fd_no in (1, 2):
            path = self.out_path(jid, fd_no)
            if os.path.exists(path):
                self.to_sync.append((jid, path))

    def forget(self, jid):
        self._begin()
        self._write("DELETE FROM jobs WHERE id=? AND state='done'", (jid,))
        for fd_no in (1, 2):
            try:
                os.unlink(self.out_path(jid, fd_no))
            except FileNotFoundError:
                pass

    def _write(self, sql, args):
        try:
            return self.db.execute(sql, args)
        except sqlite3.Error as e:
            self._rollback()
            self.problem = f"cannot write: {e}"
            raise JournalError(f"journal cannot write: {e}") from None

    def take_rolled_back(self):
        """True once after writes were rolled back since the last call."""
        lost, self.rolled_back = self.rolled_back, False
        return lost

    def commit(self):
        """Make this turn's writes durable, or roll them all back and raise
        JournalError.  An output file that cannot be synced fails its job
        visibly (outcome failed, a note) instead of being reported whole."""
        if not self.in_tx:
            return
        # Output files first: a committed result must find its output.
        for jid, path in self.to_sync:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
            except OSError as e:
                self._write("UPDATE jobs SET outcome='failed', exit=NULL, sig=NULL, note=? "
                            "WHERE id=?", (f"output not stored: {e.strerror}", jid))
        self.to_sync.clear()
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback()
            self.problem = f"cannot write: {e}"
            raise JournalError(f"journal cannot write: {e}") from None
        self.in_tx = False

    def queued(self):
        """Every job without a result, oldest first (for a restart)."""
        return self.db.execute(
            "SELECT id, command, argv, reqs, retries, timeout, tries FROM jobs "
            "WHERE state='queued' ORDER BY id").fetchall()

    def get(self, jid):
        row = self.db.execute(
            "SELECT id, command, argv, state, exit, sig, outcome, tries, worker, "
            "submitted, finished, note FROM jobs WHERE id=?", (jid,)).fetchone()
        if row is None:
            return None
        keys = ("id", "command", "argv", "state", "exit", "sig", "outcome", "tries",
                "worker", "submitted", "finished", "note")
        return dict(zip(keys, row))

    def results(self, limit, command_bytes=200):
        """The jobs nobody has collected, queued or done: the newest limit
        of them, oldest first, as dicts like get()'s, each command cut to
        its first command_bytes bytes (a listing, not the job)."""
        rows = self.db.execute(
            "SELECT id, substr(command, 1, ?), argv, state, exit, sig, outcome, tries, "
            "worker, submitted, finished, note FROM jobs ORDER BY id DESC LIMIT ?",
            (command_bytes, limit)).fetchall()
        keys = ("id", "command", "argv", "state", "exit", "sig", "outcome", "tries",
                "worker", "submitted", "finished", "note")
        return [dict(zip(keys, row)) for row in reversed(rows)]

    def expire(self, older_than):
        """Forget results finished before the given time; how many."""
        rows = self.db.execute("SELECT id FROM jobs WHERE state='done' AND finished < ?",
                               (older_than,)).fetchall()
        if not rows or not self.writable:
            return 0
        for (jid,) in rows:
            self.forget(jid)
        self.commit()
        return len(rows)

    # -- streams (gridcat): written in this turn's transaction like jobs ------------

    def queue_put(self, queue, first, msgs):
        """Insert msgs into queue with ids first, first+1, ..."""
        self._begin()
        self._write_many("INSERT INTO queue_msgs (id, queue, data) VALUES (?, ?, ?)",
                         [(first + i, queue, m) for i, m in enumerate(msgs)])

    def queue_done(self, ids):
        """Taken and acknowledged: gone for good."""
        self._begin()
        self._write_many("DELETE FROM queue_msgs WHERE id=?", [(i,) for i in ids])

    def queue_all(self):
        """(id, queue, data) of every message not taken, oldest first."""
        return self.db.execute("SELECT id, queue, data FROM queue_msgs ORDER BY id").fetchall()

    def topic_set(self, name, keep, keepbytes, keepage):
        self._begin()
        self._write("INSERT OR REPLACE INTO topics (name, keep, keepbytes, keepage) "
                    "VALUES (?, ?, ?, ?)", (name, keep, keepbytes, keepage))

    def topic_add(self, topic, first, t, msgs):
        self._begin()
        self._write_many("INSERT INTO topic_msgs (topic, off, t, data) VALUES (?, ?, ?, ?)",
                         [(topic, first + i, t, m) for i, m in enumerate(msgs)])

    def topic_trim(self, topic, below):
        """Forget topic's messages before offset below (retention)."""
        self._begin()
        self._write("DELETE FROM topic_msgs WHERE topic=? AND off<?", (topic, below))

    def topic_offset(self, topic, name, off):
        """A named subscription's offset: the next message it has not written."""
        self._begin()
        self._write("INSERT OR REPLACE INTO topic_subs (topic, name, off) VALUES (?, ?, ?)",
                    (topic, name, off))

    def topics(self):
        """[(name, keep, keepbytes, keepage, [(off, t, data)...], {sub: off})]."""
        out = []
        for name, keep, keepbytes, keepage in self.db.execute(
                "SELECT name, keep, keepbytes, keepage FROM topics ORDER BY name").fetchall():
            msgs = self.db.execute("SELECT off, t, data FROM topic_msgs WHERE topic=? "
                                   "ORDER BY off", (name,)).fetchall()
            subs = dict(self.db.execute("SELECT name, off FROM topic_subs WHERE topic=?",
                                        (name,)).fetchall())
            out.append((name, keep, keepbytes, keepage, msgs, subs))
        return out

    def _write_many(self, sql, rows):
        try:
            self.db.executemany(sql, rows)
        except sqlite3.Error as e:
            self._rollback()
            self.problem = f"cannot write: {e}"
            raise JournalError(f"journal cannot write: {e}") from None

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
