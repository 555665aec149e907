"""The hub's journal alone (gridtools/hub/journal.py) on a sqlite file in a
temporary directory: what is durable when, results, forgetting, expiry, and
a journal that cannot write (sqlite's own "disk is full")."""

import os
import time

import pytest

from gridtools.hub import journal


@pytest.fixture
def state(tmp_path):
    return str(tmp_path / "state")


def full(j):
    """Make j's database unable to grow, as a full disk would."""
    pages = j.db.execute("PRAGMA page_count").fetchone()[0]
    j.db.execute(f"PRAGMA max_page_count = {pages}")


def test_a_committed_job_survives_a_reopen_and_an_uncommitted_one_does_not(state):
    j = journal.Journal(state)
    kept = j.add(b"echo kept", False, frozenset({("site", "lab")}), 2, 1.5)
    j.commit()
    j.add(b"echo lost", False, frozenset(), 0, None)
    j.db.close()                    # a crash: the open transaction is gone
    j = journal.Journal(state)
    rows = j.queued()
    assert [(r[0], r[1]) for r in rows] == [(kept, b"echo kept")]
    assert journal.decode_reqs(rows[0][3]) == {("site", "lab")}
    assert rows[0][4:6] == (2, 1.5)
    j.close()


def test_a_finished_job_has_its_result_and_leaves_the_queue(state):
    j = journal.Journal(state)
    jid = j.add(b"false", False, frozenset(), 0, None)
    j.finish(jid, 1, 1, None, "failed", "w1", None)
    j.commit()
    row = j.get(jid)
    assert (row["state"], row["exit"], row["outcome"], row["worker"]) == ("done", 1, "failed",
                                                                          "w1")
    assert j.queued() == []
    j.close()


def test_forget_removes_the_result_and_its_output(state):
    j = journal.Journal(state)
    jid = j.add(b"echo", False, frozenset(), 0, None)
    with open(j.out_path(jid, 1), "wb") as f:
        f.write(b"out\n")
    j.finish(jid, 1, 0, None, "ok", "w", None)
    j.commit()
    j.forget(jid)
    j.commit()
    assert j.get(jid) is None
    assert not os.path.exists(j.out_path(jid, 1))
    j.close()


def test_results_lists_the_newest_oldest_first_with_commands_cut(state):
    j = journal.Journal(state)
    ids = [j.add(b"x" * 300 + b"%d" % i, False, frozenset(), 0, None) for i in range(5)]
    j.commit()
    rows = j.results(3, command_bytes=10)
    assert [r["id"] for r in rows] == ids[2:]
    assert all(r["command"] == b"x" * 10 for r in rows)
    j.close()


def test_expire_forgets_only_results_finished_before_the_time(state):
    j = journal.Journal(state)
    old, new, queued = (j.add(b"c", False, frozenset(), 0, None) for _ in range(3))
    j.finish(old, 1, 0, None, "ok", "w", None)
    j.commit()
    cut = time.time()
    time.sleep(0.01)
    j.finish(new, 1, 0, None, "ok", "w", None)
    j.commit()
    assert j.expire(cut) == 1
    assert j.get(old) is None
    assert j.get(new) is not None and j.get(queued) is not None
    j.close()


def test_a_write_that_fails_rolls_the_turn_back_and_says_so_once(state):
    j = journal.Journal(state)
    first = j.add(b"a", False, frozenset(), 0, None)
    full(j)
    with pytest.raises(journal.JournalError):
        j.add(b"x" * 50000, False, frozenset(), 0, None)
    assert not j.writable
    assert j.take_rolled_back() is True     # the first add went with it
    assert j.take_rolled_back() is False
    assert j.get(first) is None
    with pytest.raises(journal.JournalError):
        j.add(b"b", False, frozenset(), 0, None)    # refused while it cannot write
    j.close()


def test_after_a_failure_retry_write_lets_writing_resume(state):
    j = journal.Journal(state)
    j.add(b"a", False, frozenset(), 0, None)
    j.commit()
    full(j)
    with pytest.raises(journal.JournalError):
        j.add(b"x" * 50000, False, frozenset(), 0, None)
    j.db.execute("PRAGMA max_page_count = 1000000")     # room again
    assert not j.writable
    assert j.retry_write() is True and j.writable
    jid = j.add(b"b", False, frozenset(), 0, None)
    j.commit()
    assert j.get(jid)["state"] == "queued"
    j.close()


def test_requirements_round_trip():
    reqs = frozenset({("site", "lab2"), ("has", "genome=v2")})
    assert journal.decode_reqs(journal.encode_reqs(reqs)) == reqs
    assert journal.decode_reqs(journal.encode_reqs(frozenset())) == frozenset()
