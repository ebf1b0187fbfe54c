"""API keys: rotation by what the kubelet does to a Secret volume, the comparison, the refusals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from flask import Flask

from modelservice_runtime.security import (
    ApiKeys,
    Authenticator,
    AuthMiddleware,
    Unauthenticated,
    bearer_token,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def secret_volume(root: Path, keys: dict[str, str], generation: int) -> None:
    """What the kubelet writes: ``..<timestamp>/`` with the files, ``..data`` linking to it, and one link
    per key through ``..data``; an update writes a new directory and swaps ``..data`` atomically."""
    data = root / f"..2026_11_22_00_00_0{generation}"
    data.mkdir()
    for name, key in keys.items():
        (data / name).write_text(key + "\n")
    tmp = root / "..data_tmp"
    tmp.symlink_to(data.name)
    os.replace(tmp, root / "..data")
    for name in keys:
        if not (root / name).is_symlink():
            (root / name).symlink_to(f"..data/{name}")
    for stale in root.iterdir():
        if stale.is_symlink() and not stale.name.startswith("..") and stale.name not in keys:
            stale.unlink()


def test_keys_rotate_when_the_secret_volume_is_updated_without_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    secret_volume(tmp_path, {"team-a": "key-a-1", "team-b": "key-b"}, 1)
    keys = ApiKeys(str(tmp_path), clock=clock)
    assert keys.names == ["team-a", "team-b"]
    assert keys.identify("key-a-1") == "team-a" and keys.identify("key-b") == "team-b"
    secret_volume(tmp_path, {"team-a": "key-a-2"}, 2)  # team-a rotated, team-b revoked
    assert keys.identify("key-a-1") == "team-a"  # looked at again only once a second
    clock.now += 1.5
    assert keys.identify("key-a-1") is None
    assert keys.identify("key-a-2") == "team-a" and keys.identify("key-b") is None
    assert keys.names == ["team-a"]


def test_a_key_file_rewritten_in_place_is_seen_too(tmp_path: Path) -> None:
    clock = Clock()
    (tmp_path / "ci").write_text("old")
    keys = ApiKeys(str(tmp_path), clock=clock)
    (tmp_path / "ci").write_text("new-and-longer")
    clock.now += 2
    assert keys.identify("new-and-longer") == "ci" and keys.identify("old") is None


def test_empty_files_hidden_files_and_surrounding_whitespace(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    (tmp_path / ".hidden").write_text("secret")
    (tmp_path / "padded").write_text("  k3y \n")
    keys = ApiKeys(str(tmp_path))
    assert keys.names == ["padded"]
    assert keys.identify("k3y") == "padded" and keys.identify("secret") is None and keys.identify("") is None


@pytest.mark.parametrize(
    ("authorization", "api_key", "token"),
    [("Bearer abc", None, "abc"), ("bearer  abc ", None, "abc"), ("Basic abc", None, None),
     ("Bearer ", None, None), (None, "abc", "abc"), (None, " ", None), (None, None, None)],
)  # fmt: skip
def test_the_credential_is_a_bearer_token_or_an_api_key_header(
    authorization: str | None, api_key: str | None, token: str | None
) -> None:
    assert bearer_token(authorization, api_key) == token


def test_refusals_say_what_is_wrong_and_challenge_as_rfc_6750_says(tmp_path: Path) -> None:
    (tmp_path / "ci").write_text("s3cret")
    auth = Authenticator(ApiKeys(str(tmp_path)))
    assert auth.authenticate("Bearer s3cret").name == "ci"
    cases = {
        None: ("Missing credential: send Authorization: Bearer <API key>", 'Bearer realm="modelservice"'),
        "Basic Y2k6czNjcmV0": ("Unsupported Authorization scheme: send Authorization: Bearer <API key>",
                               'Bearer realm="modelservice"'),
        "Bearer wrong": ("Invalid credential: the API key is not one of this server's",
                         'Bearer realm="modelservice", error="invalid_token"'),
    }  # fmt: skip
    for header, (message, challenge) in cases.items():
        with pytest.raises(Unauthenticated) as raised:
            auth.authenticate(header)
        assert (raised.value.message, raised.value.challenge, raised.value.status) == (
            message,
            challenge,
            401,
        )


def test_without_keys_every_request_is_anonymous() -> None:
    assert Authenticator(None).authenticate(None).kind == "anonymous"


def test_the_middleware_leaves_probes_and_metrics_open_and_protects_the_rest(tmp_path: Path) -> None:
    (tmp_path / "ci").write_text("s3cret")
    app = Flask(__name__)
    for path in ("/v2/health/ready", "/metrics", "/v1/models/m"):
        app.add_url_rule(path, path, lambda: "ok")
    app.wsgi_app = AuthMiddleware(app.wsgi_app, Authenticator(ApiKeys(str(tmp_path))))  # type: ignore[method-assign]
    client = app.test_client()
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/metrics").status_code == 200
    refused = client.get("/v1/models/m")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == 'Bearer realm="modelservice"'
    assert refused.json == {"error": "Missing credential: send Authorization: Bearer <API key>"}
    assert client.get("/v1/models/m", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/v1/models/m", headers={"X-API-Key": "s3cret"}).status_code == 200
    protected = AuthMiddleware(app.wsgi_app, Authenticator(ApiKeys(str(tmp_path))), protect_metrics=True)
    app.wsgi_app = protected  # type: ignore[method-assign]
    assert client.get("/metrics").status_code == 401 and client.get("/v2/health/ready").status_code == 200
