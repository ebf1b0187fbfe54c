"""The Helm chart ships exactly our CRDs and documents every value where it is defined."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "modelservice-operator"


@pytest.mark.parametrize("name", ["modelservice.yaml", "kopf-peering.yaml"])
def test_chart_crds_are_identical_to_the_source_of_truth(name: str) -> None:
    assert (CHART / "crds" / name).read_text() == (ROOT / "crds" / name).read_text(), (
        f"charts/modelservice-operator/crds/{name} differs from crds/{name}: copy crds/{name} over it"
    )


def _leaves(values: Any, prefix: str = "") -> list[str]:
    if isinstance(values, dict) and values:
        return [leaf for key, value in values.items() for leaf in _leaves(value, f"{prefix}{key}.")]
    return [prefix.rstrip(".")]


def test_every_value_is_documented_with_a_param_line() -> None:
    text = (CHART / "values.yaml").read_text()
    documented = set(re.findall(r"^## @param (\S+)", text, flags=re.MULTILINE))
    undocumented = [
        leaf
        for leaf in _leaves(yaml.safe_load(text))
        if not any(leaf == d or leaf.startswith(d + ".") for d in documented)
    ]
    assert undocumented == []
