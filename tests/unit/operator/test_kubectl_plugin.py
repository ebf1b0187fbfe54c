"""kubectl modelservice: the patches it writes name the revision and attempt from the status."""

from __future__ import annotations

from typing import Any

import pytest

from modelservice_operator.kubectl_plugin import PluginError, control_patch, format_status


def obj(aborted: bool = False, revision: str = "b7", step: int = 1, attempt: int = 0) -> dict[str, Any]:
    rollout: dict[str, Any] = {"revision": revision, "attempt": attempt, "step": step}
    if aborted:
        rollout["aborted"] = {"reason": "RolloutAborted", "message": "aborted by spec.rollout.abort"}
    return {
        "metadata": {"name": "iris", "namespace": "ml"},
        "spec": {"rollout": {"strategy": "canary", "canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}}},
        "status": {"rollout": rollout, "stable": {"revision": "a1", "replicas": 3, "readyReplicas": 3},
                   "canary": {"revision": revision, "actualWeight": 25, "desiredWeight": 20},
                   "conditions": [{"type": "Progressing", "reason": "RolloutPaused", "message": "step 2/2 pause"}]},
    }  # fmt: skip


def test_promote_approves_the_current_step_of_this_revision_and_attempt() -> None:
    patch = control_patch(obj(step=1, attempt=2), "promote")
    assert patch == {"spec": {"rollout": {"promote": {"revision": "b7", "attempt": 2, "step": 1}}}}
    full = control_patch(obj(), "promote", full=True)
    assert full["spec"]["rollout"]["promote"] == {"revision": "b7", "attempt": 0, "full": True}


def test_abort_then_retry_raise_the_attempt() -> None:
    assert control_patch(obj(), "abort") == {"spec": {"rollout": {"abort": {"revision": "b7", "attempt": 0}}}}
    assert control_patch(obj(aborted=True, attempt=0), "retry")["spec"]["rollout"]["retry"] == {
        "revision": "b7", "attempt": 1,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("body", "action", "words"),
    [
        ({"metadata": {"name": "iris"}, "status": {}}, "promote", "no rollout under way"),
        (obj(aborted=True), "promote", "run retry first"),
        (obj(aborted=True), "abort", "already aborted"),
        (obj(), "retry", "not aborted"),
    ],
)
def test_controls_that_cannot_apply_say_why(body: dict[str, Any], action: str, words: str) -> None:
    with pytest.raises(PluginError, match=words):
        control_patch(body, action)


def test_status_marks_the_current_step_and_shows_weights() -> None:
    text = format_status(obj(step=1))
    assert '✔ 0: {"setWeight":20}' in text and '▶ 1: {"pause":{}}' in text
    assert "weight 25% (step wants 20%)" in text and "RolloutPaused" in text


def test_status_shows_the_capacity_decision() -> None:
    body = obj()
    body["status"]["capacity"] = {"mode": "Wait", "freeGPUs": 0, "reason": "needs 1 nvidia.com/gpu per pod"}
    assert "Capacity:  Wait (0 GPUs free): needs 1 nvidia.com/gpu per pod" in format_status(body)


def test_status_shows_the_analysis_measurements() -> None:
    body = obj()
    body["status"]["rollout"]["analysis"] = {"runs": [{
        "key": "step-2", "verdict": "Running", "runs": 1, "failures": 1, "inconclusive": 0,
        "last": [{"at": "2026-11-21T10:00:00Z", "phase": "Failed", "message": "canary success rate 0.91 < 0.99"}]}]}  # fmt: skip
    text = format_status(body)
    assert "Analysis:  step-2 Running: 1 measured, 1 failed, 0 inconclusive" in text
    assert "2026-11-21T10:00:00Z Failed: canary success rate 0.91 < 0.99" in text
