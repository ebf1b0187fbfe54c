"""Child names: any valid ModelService name works, and two names never share children."""

from __future__ import annotations

import re

import pytest

from modelservice_operator.naming import child_name, label_value

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize(
    "name",
    ["iris", "a.b", "a-b", "9lives", "x" * 253, "a" * 63, "a" * 64, "model.v2.prod", "0", "a-" * 100 + "z"],
)
def test_every_valid_modelservice_name_gives_a_valid_service_name(name: str) -> None:
    for suffix in ("", "stable", "canary", "7f9c4d2e1a"):
        child = child_name(name, suffix)
        assert DNS_1035.match(child), child
        assert len(child) <= 63
    assert len(label_value(name)) <= 63


def test_a_name_that_is_already_a_dns_label_is_kept() -> None:
    assert child_name("iris") == "iris"
    assert child_name("iris", "canary") == "iris-canary"


def test_names_that_differ_only_in_what_was_altered_get_distinct_children() -> None:
    assert child_name("a.b") != child_name("a-b")
    assert child_name("a.b").startswith("a-b-")
    assert child_name("9lives").startswith("ms-9lives-")
    assert child_name("x" * 80 + "a") != child_name("x" * 80 + "b")
    assert child_name("a.b", "canary") != child_name("a-b", "canary")
