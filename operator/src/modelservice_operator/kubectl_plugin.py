"""``kubectl modelservice``: watch a rollout, and promote, abort or retry it by editing spec fields only.

**GitOps:** the plugin writes nothing but ``spec.rollout.promote|abort|retry``, each naming the revision
(and attempt) it acts on, read from the status at the moment you run it; the same YAML applied again by
Argo CD or Flux repeats nothing. It drives ``kubectl`` itself (``kubectl get`` / ``kubectl patch
--type merge``), so your kubeconfig, context and RBAC apply unchanged.

    kubectl modelservice status iris [-n ns] [-w]
    kubectl modelservice promote iris [--full]
    kubectl modelservice abort iris
    kubectl modelservice retry iris
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

RESOURCE = "modelservices.serving.modelservice.io"


class PluginError(Exception):
    pass


def _rollout_target(obj: Mapping[str, Any]) -> tuple[str, int, int]:
    """(revision, attempt, step to approve) of the rollout under way, or PluginError.

    A blue-green rollout has one step (0: promote the preview); once clients are switched to it for a
    post-promotion analysis, approving step 1 passes that analysis."""
    status: Mapping[str, Any] = obj.get("status") or {}
    rollout: Mapping[str, Any] = status.get("rollout") or {}
    revision = rollout.get("revision")
    if not revision:
        name = obj.get("metadata", {}).get("name", "")
        raise PluginError(f"ModelService {name} has no rollout under way (status.rollout.revision is empty)")
    step = int(rollout.get("step") or 0) + (1 if rollout.get("switched") else 0)
    return str(revision), int(rollout.get("attempt") or 0), step


def control_patch(obj: Mapping[str, Any], action: str, full: bool = False) -> dict[str, Any]:
    """The merge patch for ``promote`` / ``abort`` / ``retry`` of the rollout the status shows."""
    revision, attempt, step = _rollout_target(obj)
    aborted = bool(((obj.get("status") or {}).get("rollout") or {}).get("aborted"))
    if action == "promote":
        if aborted:
            raise PluginError(f"revision {revision} was aborted; run retry first")
        control: dict[str, Any] = {"revision": revision, "attempt": attempt}
        control.update({"full": True} if full else {"step": step})
        return {"spec": {"rollout": {"promote": control}}}
    if action == "abort":
        if aborted:
            raise PluginError(f"revision {revision} is already aborted")
        return {"spec": {"rollout": {"abort": {"revision": revision, "attempt": attempt}}}}
    if action == "retry":
        if not aborted:
            raise PluginError(f"revision {revision} is not aborted; nothing to retry")
        return {"spec": {"rollout": {"retry": {"revision": revision, "attempt": attempt + 1}}}}
    raise PluginError(f"unknown action {action!r}")


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


def format_status(obj: Mapping[str, Any]) -> str:
    """A human summary: revisions, steps with a marker on the current one, weights, history."""
    meta, spec = obj.get("metadata", {}), obj.get("spec", {}) or {}
    status: Mapping[str, Any] = obj.get("status") or {}
    rollout_spec: Mapping[str, Any] = spec.get("rollout") or {}
    strategy = rollout_spec.get("strategy", "rolling")
    rollout: Mapping[str, Any] = status.get("rollout") or {}
    lines = [f"Name:      {meta.get('namespace', '')}/{meta.get('name', '')}", f"Strategy:  {strategy}"]
    ready, progressing = _condition(status, "Ready"), _condition(status, "Progressing")
    lines.append(
        f"Ready:     {ready.get('status', 'Unknown')} ({ready.get('reason', '')}) {ready.get('message', '')}"
    )
    lines.append(f"Progress:  {progressing.get('reason', '')}: {progressing.get('message', '')}")
    for role in ("stable", "canary", "preview"):
        block: Mapping[str, Any] = status.get(role) or {}
        if not block:
            continue
        line = (f"{role.capitalize() + ':':<11}{block.get('revision', '')}  {block.get('readyReplicas', 0)}/"
                f"{block.get('replicas', 0)} ready  model {block.get('modelVersion', '')}  "
                f"image {block.get('image', '')}")  # fmt: skip
        if role == "canary":
            line += f"  weight {block.get('actualWeight', 0)}% (step wants {block.get('desiredWeight', 0)}%)"
        lines.append(line)
    if rollout.get("revision"):
        lines.append(f"Attempt:   {rollout.get('attempt', 0)}" + (
            f"  ABORTED: {rollout['aborted'].get('message', '')}" if rollout.get("aborted") else ""))  # fmt: skip
    for run in (rollout.get("analysis") or {}).get("runs") or []:
        lines.append(f"Analysis:  {run.get('key', '')} {run.get('verdict', '')}: {run.get('runs', 0)} measured, "
                     f"{run.get('failures', 0)} failed, {run.get('inconclusive', 0)} inconclusive")  # fmt: skip
        for measurement in run.get("last") or []:
            lines.append(
                f"  {measurement.get('at', '')} {measurement.get('phase', '')}: {measurement.get('message', '')}"
            )
    capacity: Mapping[str, Any] = status.get("capacity") or {}
    if capacity:
        lines.append(f"Capacity:  {capacity.get('mode', '')} ({capacity.get('freeGPUs', 0)} GPUs free): "
                     f"{capacity.get('reason', '')}")  # fmt: skip
    steps: Sequence[Mapping[str, Any]] = ((rollout_spec.get("canary") or {}).get("steps")) or []
    if steps and strategy == "canary":
        current = int(rollout.get("step", len(steps))) if rollout.get("revision") else len(steps)
        lines.append("Steps:")
        for i, step in enumerate(steps):
            mark = "✔" if i < current else ("▶" if i == current else " ")
            lines.append(f"  {mark} {i}: {json.dumps(step, separators=(',', ':'))}")
    for entry in (status.get("history") or [])[-5:]:
        lines.append(
            f"History:   {entry.get('at', '')} {entry.get('revision', '')} {entry.get('outcome', '')}"
        )
    return "\n".join(lines)


def _kubectl(args: Sequence[str], namespace: str | None) -> str:
    kubectl = os.environ.get("KUBECTL", "kubectl")
    command = [kubectl, *(["-n", namespace] if namespace else []), *args]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PluginError(result.stderr.strip() or f"{' '.join(command)} failed")
    return result.stdout


def get(name: str, namespace: str | None) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(_kubectl(["get", RESOURCE, name, "-o", "json"], namespace))
    return obj


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubectl modelservice", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--namespace", default=None)
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="the rollout: revisions, steps, weights, history")
    status.add_argument("name")
    status.add_argument("-w", "--watch", action="store_true", help="refresh every 2 seconds")
    promote = sub.add_parser("promote", help="approve the current step (or --full: skip the rest)")
    promote.add_argument("name")
    promote.add_argument("--full", action="store_true")
    for action in ("abort", "retry"):
        sub.add_parser(action, help=f"{action} the rollout under way").add_argument("name")
    args = parser.parse_args(argv)
    try:
        if args.command == "status":
            while True:
                text = format_status(get(args.name, args.namespace))
                if not args.watch:
                    print(text)
                    return 0
                print("\033[2J\033[H" + text, flush=True)
                time.sleep(2)
        obj = get(args.name, args.namespace)
        patch = control_patch(obj, args.command, full=getattr(args, "full", False))
        _kubectl(["patch", RESOURCE, args.name, "--type", "merge", "-p", json.dumps(patch)], args.namespace)
        control = patch["spec"]["rollout"][args.command]
        print(f"modelservice/{args.name} {args.command}: {json.dumps(control, separators=(',', ':'))}")
        return 0
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
