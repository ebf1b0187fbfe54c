"""A response cache for deterministic models, kept in the model process for the whole pod.

``--response_cache_bytes`` bounds it (least recently used entries go first), ``--response_cache_ttl_seconds``
ages entries out (0: only the bound does). An entry is the response body an HTTP worker wrote, keyed by
the API, the model, the version that *served* it, the signature and a digest of the canonical request (the
parsed JSON written back with sorted keys and no spaces, so whitespace and key order do not matter): a new
version never answers with an old one's entry, and a request a newer version served is not stored under
the version it asked for. Pure: time is injected.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

Key = tuple[str, str, int, str, bytes]  # api, model, version, signature, digest of the canonical request
ENTRY_OVERHEAD = 200  # bytes counted per entry on top of its body and key, for the bound


def request_digest(doc: Any) -> bytes | None:
    """The digest of a parsed request written canonically, or None when it cannot be (too deep to cache)."""
    try:
        canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    except (RecursionError, TypeError, ValueError):
        return None
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).digest()


def make_key(api: str, model: str, version: int, signature: Any, digest: bytes) -> Key:
    return api, model, version, signature if isinstance(signature, str) else repr(signature), digest


class ResponseCache:
    def __init__(
        self, max_bytes: int, ttl_s: float = 0.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"a response cache needs a positive size, got {max_bytes}")
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.clock = clock
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0
        self._entries: OrderedDict[Key, tuple[bytes, float, int]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _size(key: Key, body: bytes) -> int:
        return len(body) + len(key[1]) + len(key[3]) + len(key[4]) + ENTRY_OVERHEAD

    def get(self, key: Key) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and self.ttl_s > 0 and self.clock() >= entry[1]:
                self._drop(key)
                entry = None
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: Key, body: bytes) -> bool:
        """Store ``body``; False when it alone is larger than the whole cache."""
        size = self._size(key, body)
        if size > self.max_bytes:
            return False
        with self._lock:
            if key in self._entries:
                self._drop(key)
            expires = self.clock() + self.ttl_s if self.ttl_s > 0 else float("inf")
            self._entries[key] = (body, expires, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                oldest = next(iter(self._entries))
                self._drop(oldest)
                self.evictions += 1
        return True

    def _drop(self, key: Key) -> None:
        _, _, size = self._entries.pop(key)
        self.bytes -= size

    def __len__(self) -> int:
        return len(self._entries)


def build_response_cache(max_bytes: int, ttl_s: float) -> ResponseCache | None:
    return ResponseCache(max_bytes, ttl_s) if max_bytes > 0 else None
