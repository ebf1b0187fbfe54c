"""Kubernetes authentication's reviews against a stand-in for the API server: verdicts, the cache, and
an API server that cannot answer."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from modelservice_runtime.errors import Unavailable
from modelservice_runtime.kube_auth import KubernetesReviewer, verb_of
from modelservice_runtime.security import Authenticator, PermissionDenied, Unauthenticated

USERS = {"token-a": "system:serviceaccount:ml:client-a", "token-b": "system:serviceaccount:ml:client-b"}
ALLOWED = {("system:serviceaccount:ml:client-a", "create")}


class FakeApiServer:
    def __init__(self) -> None:
        self.token_reviews = 0
        self.access_reviews: list[Any] = []
        self.down = False

    def create_token_review(self, body: Any) -> Any:
        if self.down:
            raise ApiException(status=503, reason="Service Unavailable")
        self.token_reviews += 1
        user = USERS.get(body.spec.token)
        return SimpleNamespace(status=SimpleNamespace(
            authenticated=user is not None,
            user=SimpleNamespace(username=user, uid="u-1", groups=["system:serviceaccounts"], extra=None) if user else None,
        ))  # fmt: skip

    def create_subject_access_review(self, body: Any) -> Any:
        self.access_reviews.append(body.spec)
        allowed = (body.spec.user, body.spec.resource_attributes.verb) in ALLOWED
        return SimpleNamespace(
            status=SimpleNamespace(allowed=allowed, reason="" if allowed else "no RBAC rule")
        )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def reviewer() -> tuple[KubernetesReviewer, FakeApiServer, Clock]:
    server, clock = FakeApiServer(), Clock()
    return KubernetesReviewer("ml/iris", api=(server, server), clock=clock), server, clock


def test_a_service_account_with_the_right_is_allowed_and_asked_about_the_modelservice() -> None:
    kube, server, _ = reviewer()
    verdict = kube.review("token-a", "create")
    assert (verdict.result, verdict.user) == ("allowed", "system:serviceaccount:ml:client-a")
    attributes = server.access_reviews[0].resource_attributes
    assert (attributes.group, attributes.resource, attributes.subresource, attributes.namespace, attributes.name,
            attributes.verb) == ("serving.modelservice.io", "modelservices", "predict", "ml", "iris", "create")  # fmt: skip
    assert server.access_reviews[0].groups == ["system:serviceaccounts"]


def test_a_valid_token_without_the_right_is_forbidden_and_a_bad_one_unauthenticated() -> None:
    kube, _, _ = reviewer()
    forbidden = kube.review("token-b", "create")
    assert forbidden.result == "forbidden"
    assert forbidden.message == (
        'system:serviceaccount:ml:client-b may not create modelservices/predict "iris" in namespace "ml" '
        "(no RBAC rule)"
    )
    assert kube.review("token-a", "get").result == "forbidden"  # the right is per verb
    assert kube.review("garbage", "create").result == "unauthenticated"


def test_verdicts_are_cached_briefly_refusals_more_briefly() -> None:
    kube, server, clock = reviewer()
    kube.review("token-a", "create")
    kube.review("token-b", "create")
    clock.now = 9.0
    kube.review("token-a", "create")
    kube.review("token-b", "create")
    assert server.token_reviews == 2
    clock.now = 10.5  # refusals (10 s) expire first: a right just granted shows soon
    kube.review("token-b", "create")
    kube.review("token-a", "create")
    assert server.token_reviews == 3
    clock.now = 61.0
    kube.review("token-a", "create")
    assert server.token_reviews == 4


def test_an_api_server_that_cannot_answer_is_a_503_and_not_cached() -> None:
    kube, server, _ = reviewer()
    server.down = True
    with pytest.raises(Unavailable, match="Cannot review the credential with the API server: 503"):
        kube.review("token-a", "create")
    server.down = False
    assert kube.review("token-a", "create").result == "allowed"


def test_the_authenticator_tries_api_keys_first_then_the_api_server(tmp_path: Any) -> None:
    from modelservice_runtime.security import ApiKeys

    (tmp_path / "ci").write_text("key-ci")
    kube, _, _ = reviewer()
    auth = Authenticator(ApiKeys(str(tmp_path)), kube.review)
    assert auth.authenticate("Bearer key-ci").name == "ci"
    assert auth.authenticate("Bearer token-a").name == "system:serviceaccount:ml:client-a"
    with pytest.raises(PermissionDenied) as denied:
        auth.authenticate("Bearer token-b")
    assert denied.value.status == 403
    with pytest.raises(Unauthenticated) as missing:
        auth.authenticate(None)
    assert (
        missing.value.message
        == "Missing credential: send Authorization: Bearer <API key or service-account token>"
    )
    with pytest.raises(Unauthenticated, match="did not accept the token"):
        auth.authenticate("Bearer garbage")


def test_the_verb_follows_the_http_method() -> None:
    assert (verb_of("GET"), verb_of("HEAD"), verb_of("POST")) == ("get", "get", "create")
    with pytest.raises(ValueError, match="<namespace>/<name>"):
        KubernetesReviewer("iris")
