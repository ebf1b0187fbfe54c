"""Compare only what we own, as the server stores it; build the body that takes our fields back.

**For zero writes in steady state,** ``owned_fields_match`` ignores server defaults and other managers'
fields, and compares resource quantities by value with the official ``parse_quantity`` (the server
stores ``cpu: "0.5"`` as ``500m`` and ``memory: 2048Mi`` as ``2Gi``; comparing strings made a write per
resync forever). A few maps are ours alone (selectors): an extra key there is drift, because it changes
which pods a Service or a budget selects.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from kubernetes.utils import parse_quantity

Path = tuple[str, ...]

# Maps whose every key is ours: another manager's extra key changes what they select.
EXACT_MAPS: frozenset[Path] = frozenset(
    {
        ("spec", "selector"),  # Service
        ("spec", "selector", "matchLabels"),  # Deployment, PodDisruptionBudget
    }
)
QUANTITY_PARENTS = frozenset({"requests", "limits"})
QUANTITY_TARGETS = frozenset({"averageValue", "value"})


def _quantity(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return Decimal(parse_quantity(value))  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, InvalidOperation):
        return None


def _is_quantity(path: Path) -> bool:
    if len(path) >= 2 and path[-2] in QUANTITY_PARENTS:
        return True
    return len(path) >= 2 and path[-1] in QUANTITY_TARGETS and path[-2] == "target"


def scalar_equal(want: Any, got: Any, path: Path = ()) -> bool:
    if isinstance(want, bool) or isinstance(got, bool):
        return want is got
    if _is_quantity(path):
        a, b = _quantity(want), _quantity(got)
        if a is not None and b is not None:
            return a == b
    if isinstance(want, (int, float, str)) and isinstance(got, (int, float, str)):
        return str(want) == str(got)  # int-or-string fields: 1 == "1"
    return bool(want == got)


def owned_fields_match(desired: Any, observed: Any, path: Path = ()) -> bool:
    """Every field we set has the same value on the server; extra server-side fields are ignored."""
    if isinstance(desired, Mapping):
        if not isinstance(observed, Mapping):
            return False
        if path in EXACT_MAPS and set(observed) != set(desired):
            return False
        return all(
            key in observed and owned_fields_match(value, observed[key], (*path, str(key)))
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(observed, list)
            and len(desired) == len(observed)
            and all(owned_fields_match(d, o, path) for d, o in zip(desired, observed, strict=True))
        )
    return scalar_equal(desired, observed, path)


def drifted_fields(desired: Any, observed: Any, path: Path = ()) -> list[str]:
    """Dotted paths of our fields that differ (for log lines and Events)."""
    if owned_fields_match(desired, observed, path):
        return []
    if isinstance(desired, Mapping) and isinstance(observed, Mapping) and path not in EXACT_MAPS:
        found: list[str] = []
        for key, value in desired.items():
            found.extend(drifted_fields(value, observed.get(key), (*path, str(key))))
        return found
    return [".".join(path)]


def take_back(observed: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """A full object for an update (PUT): the observed one with every field we own set to ours.

    Lists and exact maps are replaced whole, so another manager's edit of a list entry (a Service port
    changed by hand, which server-side apply would merge into a duplicate) or an extra selector key is
    undone. The resourceVersion is kept: a concurrent write makes this a 409, and we read again.
    """
    result = copy.deepcopy(dict(observed))
    result.get("metadata", {}).pop("managedFields", None)

    def merge(target: dict[str, Any], want: Mapping[str, Any], path: Path) -> None:
        for key, value in want.items():
            sub = (*path, str(key))
            if isinstance(value, Mapping) and sub not in EXACT_MAPS and isinstance(target.get(key), dict):
                merge(target[key], value, sub)
            else:
                target[key] = copy.deepcopy(value)

    merge(result, desired, ())
    return result


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    owners: Sequence[Mapping[str, Any]] = obj.get("metadata", {}).get("ownerReferences") or []
    return next((str(o.get("uid")) for o in owners if o.get("controller")), None)
