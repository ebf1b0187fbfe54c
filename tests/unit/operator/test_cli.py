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


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"foo: [\n", "while parsing a flow node"),
        (b"- a\n- b\n", "document 1 is not an object but a list"),
        (b"kind: ModelService\nmetadata: 7\nspec: {model: {storageUri: 'pvc://m/x'}}\n", "metadata: must be an object"),
        (b"\xff\xfe", "can't decode byte 0xff"),
        (b"a: !!int x\n", "invalid literal for int()"),
        (None, "No such file or directory"),
    ],
    ids=["bad YAML", "a list", "metadata not an object", "not UTF-8", "a bad !!int", "no such file"],
)  # fmt: skip
def test_render_of_a_file_it_cannot_read_says_why_in_one_line(
    tmp_path: Path, content: bytes | None, words: str
) -> None:
    path = tmp_path / "in.yaml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SystemExit) as raised:
        main(["render", "-f", str(path)])
    message = str(raised.value.code)
    assert message.startswith(f"{path}: ") and words in message, message


def test_crd_prints_the_crd_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd"]) == 0
    assert capsys.readouterr().out == (ROOT / "crds" / "modelservice.yaml").read_text()
