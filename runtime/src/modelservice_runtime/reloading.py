"""Values built from files a Secret volume holds, rebuilt when the kubelet updates them: API keys
(``security.py``) and TLS certificates (``tls.py``). No restart, no watch: the files are looked at
again at most every ``recheck_s``."""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

RECHECK_SECONDS = 1.0


def _stat(path: str) -> tuple[Any, ...]:
    try:
        stat = os.stat(path)
    except OSError:
        return (path, None)
    return (path, stat.st_ino, stat.st_mtime_ns, stat.st_size)


def files_stamp(*paths: str) -> tuple[Any, ...]:
    """What changes when the files do: each file's identity and time (a directory's files, hidden ones
    aside), and where a Secret volume's ``..data`` link points (the kubelet swaps it on every update)."""
    stamp: list[Any] = []
    for path in paths:
        directory = path if os.path.isdir(path) else os.path.dirname(path) or "."
        data = os.path.join(directory, "..data")
        stamp.append(os.readlink(data) if os.path.islink(data) else "")
        if os.path.isdir(path):
            try:
                entries = sorted(e for e in os.listdir(path) if not e.startswith("."))
            except OSError:
                entries = []
            stamp.extend(_stat(os.path.join(path, entry)) for entry in entries)
        else:
            stamp.append(_stat(path))
    return tuple(stamp)


class Reloading:
    """A value built from files, rebuilt when they change (checked at most every ``recheck_s``). A
    rebuild that fails (files half-written) keeps the previous value and is tried again later."""

    def __init__(
        self,
        paths: tuple[str, ...],
        build: Callable[[], Any],
        what: str,
        clock: Callable[[], float] = time.monotonic,
        recheck_s: float = RECHECK_SECONDS,
    ) -> None:
        self.paths = paths
        self.build = build
        self.what = what
        self.clock = clock
        self.recheck_s = recheck_s
        self._lock = threading.Lock()
        self._stamp = files_stamp(*paths)
        self._value = build()
        self._checked = clock()

    def get(self) -> Any:
        now = self.clock()
        if now - self._checked < self.recheck_s:
            return self._value
        with self._lock:
            if now - self._checked >= self.recheck_s:
                self._checked = now
                stamp = files_stamp(*self.paths)
                if stamp != self._stamp:
                    try:
                        value = self.build()
                    except (OSError, ssl.SSLError, ValueError) as exc:
                        log.warning(
                            "%s changed in %s but cannot be loaded yet: %s", self.what, self.paths[0], exc
                        )
                    else:
                        self._value, self._stamp = value, stamp
                        log.info("%s reloaded from %s", self.what, self.paths[0])
        return self._value
