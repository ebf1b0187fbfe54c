"""Overload control: refuse by queueing delay, only when the server is overloaded (CoDel's idea).

A request that waits to be served is a request the server cannot serve right now. The Gunicorn worker
(``gunicorn_conf.RuntimeWorker``) knows how long each request has waited when it starts serving it: the
lag of its event loop (the turns that served other requests first) and its wait for a request slot.
That is its *sojourn* (time queued). ``QueueDelayShedder`` follows CoDel (Nichols & Jacobson,
"Controlling Queue Delay", 2012) as request servers adapted it: a queue whose *minimum* sojourn over an
interval stays above the target holds a standing backlog the server cannot drain, so for the next
interval requests that waited longer than the target are refused at once (503 with ``Retry-After``),
which drains the backlog to the target. Bursts that clear within an interval (a minimum below the
target) are never refused: many clients, or a closed loop at full throughput, only queue as long as the
server takes to go through them, and that is what the target must exceed.

The target derives from the request deadline (``--rest_api_timeout_in_ms``: a tenth of it, at most
100 ms) or is set with ``--max_queue_delay_ms``. A served request then waits at most about the target,
so the p99 of served requests stays bounded under overload, and refusals cost microseconds. 100 ms is
above what 128 clients of a server at a few thousand requests per second wait for each other (about
50 ms), and low enough that the excess of an overload is refused while its clients still listen.

Pure and time-injected: ``admit(sojourn, now)`` is all the state machine there is.
"""

from __future__ import annotations

import contextvars
import threading

DEFAULT_TARGET_S = 0.1


def target_for(deadline_ms: int, override_ms: int) -> float:
    """The queueing-delay target in seconds: the flag when set, else a tenth of the deadline, <= 100 ms."""
    if override_ms > 0:
        return override_ms / 1000.0
    if deadline_ms > 0:
        return min(DEFAULT_TARGET_S, deadline_ms / 10000.0)
    return DEFAULT_TARGET_S


class QueueDelayShedder:
    def __init__(self, target_s: float, interval_s: float | None = None) -> None:
        self.target = target_s
        # CoDel's interval: long enough to tell a burst from a standing queue (its paper's 100 ms to a
        # 5 ms target; here the target is larger, so is the interval).
        self.interval = interval_s if interval_s is not None else max(0.1, 2 * target_s)
        self._window_end: float | None = None
        self._window_min = float("inf")
        self.overloaded = False
        self._lock = threading.Lock()

    def admit(self, sojourn: float, now: float) -> bool:
        with self._lock:
            if self._window_end is None:
                self._window_end = now + self.interval
            elif now >= self._window_end:
                # Over the interval that just ended, did even the luckiest request wait too long?
                self.overloaded = self._window_min > self.target
                self._window_min = float("inf")
                self._window_end = now + self.interval
            self._window_min = min(self._window_min, sojourn)
            return not (self.overloaded and sojourn > self.target)


# -- when the request being served was queued (set by the Gunicorn worker, read by the app). A context
# variable: each thread, and each greenlet, has its own.

_queued_at: contextvars.ContextVar[float | None] = contextvars.ContextVar("queued_at", default=None)


def set_queued_at(timestamp: float | None) -> None:
    _queued_at.set(timestamp)


def queued_at() -> float | None:
    return _queued_at.get()
