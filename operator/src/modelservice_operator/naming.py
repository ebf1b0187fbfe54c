"""Child names and labels.

Names of children must be DNS-1035 labels (Services: lower-case letters, digits and '-', starting with a
letter, at most 63 characters), while a ModelService name may be any 253-character DNS subdomain. A name
that had to be altered to fit (dots replaced, a leading digit prefixed, a long name cut) always gets a
hash of the original name as a suffix, so ``a.b`` and ``a-b`` in one namespace never share children.
Label values have the same 63-character limit.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from . import GROUP

MAX_NAME = 63
NAME_LABEL = f"{GROUP}/name"
REVISION_LABEL = f"{GROUP}/revision"
COMPONENT = "predictor"
STORAGE_INITIALIZER = "storage-initializer"  # the init container downloading s3:// and http(s):// models


def short_hash(value: str, length: int = 8) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:length]


def fit(name: str, limit: int = MAX_NAME) -> str:
    """``name`` if it fits, else a prefix plus a hash of the whole name; always a valid DNS label."""
    if len(name) <= limit:
        return name
    return f"{name[: limit - 9].rstrip('-.')}-{short_hash(name)}"


_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def base_name(ms_name: str) -> str:
    """The ModelService's name as a DNS-1035 label: itself when it is one, else altered plus a hash."""
    if len(ms_name) <= MAX_NAME and _DNS_LABEL.match(ms_name):
        return ms_name
    altered = ms_name.lower().replace(".", "-")
    if not altered[:1].isalpha():
        altered = f"ms-{altered}"
    return f"{altered[: MAX_NAME - 9].rstrip('-')}-{short_hash(ms_name)}"


def child_name(ms_name: str, suffix: str = "") -> str:
    """``<name>`` or ``<name>-<suffix>``, a DNS-1035 label of at most 63 characters; unique per name."""
    base = base_name(ms_name)
    if not suffix:
        return base
    room = MAX_NAME - len(suffix) - 1
    if len(base) > room:
        base = f"{base[: room - 9].rstrip('-')}-{short_hash(ms_name)}"
    return f"{base}-{suffix}"


def label_value(value: str) -> str:
    return fit(value)


def selector_labels(ms_name: str) -> dict[str, str]:
    """The immutable selector of every child: never includes the revision."""
    return {NAME_LABEL: label_value(ms_name), "app.kubernetes.io/component": COMPONENT}


def common_labels(ms_name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "modelservice",
        "app.kubernetes.io/instance": label_value(ms_name),
        "app.kubernetes.io/part-of": "modelservice",
        "app.kubernetes.io/managed-by": "modelservice-operator",
        **selector_labels(ms_name),
    }


def revision_of(pod_inputs: Mapping[str, Any]) -> str:
    """The revision: a hash of everything that shapes the pods, stable across dict ordering."""
    return short_hash(json.dumps(pod_inputs, sort_keys=True, default=str), 10)


def selector_string(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
