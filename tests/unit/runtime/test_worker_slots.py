"""The gevent worker's request slots (``gunicorn_conf.Slots``): at most N requests of a worker in the
model process at once, the others served in arrival order."""

from __future__ import annotations

import gevent

from modelservice_runtime.gunicorn_conf import Slots


def test_a_freed_slot_goes_to_the_first_waiter_not_back_to_the_greenlet_that_freed_it() -> None:
    slots = Slots(1)
    order: list[str] = []

    def greedy() -> None:
        for n in range(3):  # a kept-alive connection with requests back to back
            with slots:
                order.append(f"greedy-{n}")
                gevent.sleep(0.01)

    def patient(name: str) -> None:
        with slots:
            order.append(name)

    first = gevent.spawn(greedy)
    gevent.sleep(0.001)  # greedy holds the slot
    others = [gevent.spawn(patient, name) for name in ("a", "b")]
    gevent.joinall([first, *others], timeout=10, raise_error=True)
    assert order == ["greedy-0", "a", "b", "greedy-1", "greedy-2"]


def test_a_waiter_killed_before_its_turn_leaves_its_place_and_loses_no_slot() -> None:
    slots = Slots(1)
    slots.acquire()
    killed = gevent.spawn(slots.acquire)
    gevent.sleep(0.001)
    killed.kill()
    served: list[str] = []

    def next_in_line() -> None:
        slots.acquire()
        served.append("next")

    waiter = gevent.spawn(next_in_line)
    gevent.sleep(0.001)
    slots.release()
    waiter.join(timeout=5)
    assert served == ["next"]
    slots.release()
    slots.acquire()  # the one slot is free again: no wait
