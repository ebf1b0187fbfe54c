"""The CLI's cluster-free commands: render and crd."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from modelservice_operator.cli import main

ROOT = Path(__file__).resolve().parents[3]


def test_render_prints_every_child_like_helm_template(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["render", "-f", str(ROOT / "examples" / "iris-autoscaling.yaml"), "--runtime-image", "r:1"])
        == 0
    )
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == [
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ]
    assert docs[0]["spec"]["template"]["spec"]["containers"][0]["image"] == "r:1"


def test_render_of_an_invalid_spec_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: serving.modelservice.io/v1alpha1\nkind: ModelService\nmetadata: {name: x}\n"
        "spec: {model: {storageUri: 'gs://b/x'}}\n"
    )
    with pytest.raises(SystemExit, match=r"spec\.model\.storageUri"):
        main(["render", "-f", str(bad)])


def test_crd_prints_the_crd_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd"]) == 0
    assert capsys.readouterr().out == (ROOT / "crds" / "modelservice.yaml").read_text()
