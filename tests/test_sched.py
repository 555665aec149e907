"""The hub's scheduler alone (gridtools/hub/sched.py): FIFO per requirement
set, credits, tags, release, a worker's loss, draining, lazy cancellation."""

from gridtools.hub import sched


def worker(name, slots=1, **tags):
    return name, sched.Slots(name, slots, tags)


def test_job_ids_are_the_hubs_and_never_repeat():
    s = sched.Scheduler()
    ids = [s.new_job(b"true").hid for _ in range(5)]
    assert ids == sorted(set(ids)) and len(ids) == 5
    assert s.new_job(b"x").submitted > 0


def test_a_free_worker_takes_a_job_at_once_and_a_busy_one_queues_it():
    s = sched.Scheduler()
    key, w = worker("w1", slots=1)
    assert s.credit(key, w) == []
    a, b = s.new_job(b"a"), s.new_job(b"b")
    assert s.submit(a) == key
    assert (a.state, a.worker, a.tries) == (sched.RUNNING, key, 1)
    assert s.submit(b) is None
    assert b.state == sched.QUEUED and s.waiting() == 1


def test_a_released_slot_takes_the_oldest_queued_job_first():
    s = sched.Scheduler()
    key, w = worker("w1", slots=1)
    s.credit(key, w)
    jobs = [s.new_job(b"%d" % i) for i in range(4)]
    for j in jobs:
        s.submit(j)
    order = [jobs[0]]
    for _ in range(3):
        s.release(key, w, order[-1])
        order += s.credit(key, w)
    assert order == jobs


def test_requirements_go_only_to_workers_with_the_tags():
    s = sched.Scheduler()
    plain = worker("plain", slots=2)
    lab = worker("lab", slots=1, site="lab")
    s.credit(*plain)
    job = s.new_job(b"x", reqs=frozenset({("site", "lab")}))
    assert s.submit(job) is None        # the plain worker's free slots do not fit
    assert s.credit(*lab) == [job]
    assert job.worker == "lab"


def test_credit_takes_the_oldest_head_across_the_queues_it_may_serve():
    s = sched.Scheduler()
    tagged = s.new_job(b"t", reqs=frozenset({("gpu", "1")}))
    plain = s.new_job(b"p")
    s.submit(tagged)
    s.submit(plain)
    key, w = worker("both", slots=1, gpu="1")
    assert s.credit(key, w) == [tagged]


def test_free_workers_take_turns():
    s = sched.Scheduler()
    a, b = worker("a", slots=2), worker("b", slots=2)
    s.credit(*a)
    s.credit(*b)
    got = [s.submit(s.new_job(b"x")) for _ in range(4)]
    assert got == ["a", "b", "a", "b"]


def test_a_lost_worker_gives_back_its_jobs_and_no_more_credit():
    s = sched.Scheduler()
    key, w = worker("w", slots=2)
    s.credit(key, w)
    jobs = [s.new_job(b"x") for _ in range(2)]
    for j in jobs:
        s.submit(j)
    assert sorted(j.hid for j in s.remove_worker(key, w)) == sorted(j.hid for j in jobs)
    assert all(j.worker is None for j in jobs)
    assert s.submit(s.new_job(b"y")) is None


def test_a_draining_worker_takes_nothing_new():
    s = sched.Scheduler()
    key, w = worker("w", slots=2)
    s.credit(key, w)
    s.drain(key, w)
    assert s.submit(s.new_job(b"x")) is None
    assert s.credit(key, w) == []


def test_a_dequeued_job_is_skipped_and_never_given_out():
    s = sched.Scheduler()
    a, b = s.new_job(b"a"), s.new_job(b"b")
    s.submit(a)
    s.submit(b)
    s.dequeue(a)
    assert a.state == sched.GONE and s.waiting() == 1
    assert s.credit(*worker("w", slots=2)) == [b]
    assert s.queues == {}


def test_many_dequeued_jobs_are_swept_out_at_once():
    s = sched.Scheduler()
    jobs = [s.new_job(b"x") for _ in range(sched.COMPACT_AFTER + 2)]
    for j in jobs:
        s.submit(j)
    for j in jobs[:-1]:
        s.dequeue(j)
    assert sum(len(q) for q in s.queues.values()) == 1
    assert s.gone == 0
