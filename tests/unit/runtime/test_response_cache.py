"""The response cache: canonical keys, the byte bound, the TTL, on an injected clock."""

from __future__ import annotations

from typing import Any

import pytest

from modelservice_runtime.response_cache import Key, ResponseCache, make_key, request_digest


def request_key(api: str, model: str, version: int, signature: str, doc: Any) -> Key | None:
    """What the HTTP worker (the digest) and the model process (the key) make of a request together."""
    digest = request_digest(doc)
    return None if digest is None else make_key(api, model, version, signature, digest)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_key_order_and_whitespace_do_not_matter_values_versions_and_signatures_do() -> None:
    doc = {"signature_name": "", "instances": [[1.0, 2.0]]}
    same = {"instances": [[1.0, 2.0]], "signature_name": ""}
    key = request_key("v1:predict", "iris", 2, "", doc)
    assert key == request_key("v1:predict", "iris", 2, "", same)
    assert key != request_key("v1:predict", "iris", 2, "", {"instances": [[1.0, 2.5]]})
    assert key != request_key("v1:predict", "iris", 3, "", doc)
    assert key != request_key("v1:predict", "iris", 2, "other", doc)
    assert request_key("v1:predict", "m", 1, "", {"x": float("nan")}) != request_key(
        "v1:predict", "m", 1, "", {"x": None}
    )


def test_least_recently_used_entries_leave_first_within_the_byte_bound() -> None:
    cache = ResponseCache(max_bytes=3 * 300)
    keys = [request_key("v1:predict", "m", 1, "", {"i": i}) for i in range(4)]
    for key in keys[:3]:
        assert key is not None and cache.put(key, b"x" * 40)
    assert cache.get(keys[0]) == b"x" * 40  # now the most recent
    assert keys[3] is not None and cache.put(keys[3], b"y" * 40)
    assert cache.get(keys[1]) is None and cache.get(keys[0]) is not None and len(cache) == 3
    assert cache.bytes <= cache.max_bytes and cache.evictions == 1
    assert not cache.put(keys[0], b"z" * 2000)  # larger than the whole cache: not stored


def test_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    cache = ResponseCache(max_bytes=10_000, ttl_s=30, clock=clock)
    key = request_key("v1:predict", "m", 1, "", {"a": 1})
    assert key is not None
    cache.put(key, b"body")
    clock.now = 29.9
    assert cache.get(key) == b"body"
    clock.now = 30.0
    assert cache.get(key) is None and cache.bytes == 0
    assert (cache.hits, cache.misses) == (1, 1)


def test_a_cache_needs_a_size() -> None:
    with pytest.raises(ValueError, match="positive size"):
        ResponseCache(0)
