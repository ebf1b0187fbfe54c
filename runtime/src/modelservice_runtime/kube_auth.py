"""Kubernetes-native authentication, kube-rbac-proxy style: a client presents its service-account token;
the model process asks the API server who it is (TokenReview) and whether it may use this ModelService
(SubjectAccessReview), and remembers the answer briefly.

``--kubernetes_auth=<namespace>/<name>`` names the ModelService. The right checked is the verb of the
request (GET: ``get``, anything else: ``create``) on the ``predict`` subresource of
``modelservices.serving.modelservice.io``, so a Role grants it as::

    rules:
    - apiGroups: [serving.modelservice.io]
      resources: [modelservices/predict]
      resourceNames: [iris]
      verbs: [create, get]

Verdicts are cached by the token's SHA-256 and the verb: allowed for 60 s, refused for 10 s (a right just
granted shows within that). An API server that cannot be reached is a 503 for the request, never cached.
The model process runs the reviews (in-cluster credentials of the pod's service account, or
``$KUBECONFIG`` outside a pod) for every HTTP worker and the gRPC server, so the cache is the pod's.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import Unavailable

log = logging.getLogger(__name__)

GROUP, RESOURCE, SUBRESOURCE = "serving.modelservice.io", "modelservices", "predict"
ALLOWED_TTL_S, REFUSED_TTL_S = 60.0, 10.0
MAX_ENTRIES = 10_000
ALLOWED, UNAUTHENTICATED, FORBIDDEN = "allowed", "unauthenticated", "forbidden"


@dataclass(frozen=True)
class Verdict:
    result: str  # allowed | unauthenticated | forbidden
    user: str = ""
    message: str = ""


def verb_of(method: str) -> str:
    return "get" if method.upper() in ("GET", "HEAD") else "create"


class KubernetesReviewer:
    def __init__(
        self,
        target: str,
        api: Any = None,
        clock: Callable[[], float] = time.monotonic,
        allowed_ttl_s: float = ALLOWED_TTL_S,
        refused_ttl_s: float = REFUSED_TTL_S,
    ) -> None:
        namespace, _, name = target.partition("/")
        if not namespace or not name:
            raise ValueError(f"--kubernetes_auth needs <namespace>/<name>, got {target!r}")
        self.namespace, self.name = namespace, name
        self._api = api
        self.clock = clock
        self.allowed_ttl_s, self.refused_ttl_s = allowed_ttl_s, refused_ttl_s
        self._cache: OrderedDict[tuple[bytes, str], tuple[Verdict, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _client(self) -> Any:
        if self._api is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config()  # type: ignore[no-untyped-call]
            api_client = client.ApiClient()
            self._api = (client.AuthenticationV1Api(api_client), client.AuthorizationV1Api(api_client))
        return self._api

    def review(self, token: str, verb: str) -> Verdict:
        key = (hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest(), verb)
        now = self.clock()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and now < cached[1]:
                return cached[0]
        verdict = self._ask(token, verb)
        ttl = self.allowed_ttl_s if verdict.result == ALLOWED else self.refused_ttl_s
        with self._lock:
            self._cache[key] = (verdict, now + ttl)
            self._cache.move_to_end(key)
            while len(self._cache) > MAX_ENTRIES:
                self._cache.popitem(last=False)
        return verdict

    def _ask(self, token: str, verb: str) -> Verdict:
        import urllib3
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        authentication, authorization = self._client()
        try:
            review = authentication.create_token_review(
                client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
            )
            status = review.status
            if not status or not status.authenticated or not status.user:
                return Verdict(
                    UNAUTHENTICATED, message="Invalid credential: the API server did not accept the token"
                )
            user = status.user
            access = authorization.create_subject_access_review(
                client.V1SubjectAccessReview(
                    spec=client.V1SubjectAccessReviewSpec(
                        user=user.username, uid=user.uid, groups=user.groups, extra=user.extra,
                        resource_attributes=client.V1ResourceAttributes(
                            namespace=self.namespace, name=self.name, group=GROUP, resource=RESOURCE,
                            subresource=SUBRESOURCE, verb=verb,
                        ),
                    )
                )
            )  # fmt: skip
        except ApiException as exc:
            log.warning("Token or access review failed: %s %s", exc.status, exc.reason)
            raise Unavailable(
                f"Cannot review the credential with the API server: {exc.status} {exc.reason}"
            ) from None
        except (OSError, urllib3.exceptions.HTTPError) as exc:  # cannot connect, timed out
            log.warning("Token or access review failed: %s", exc)
            raise Unavailable(f"Cannot reach the API server to review the credential: {exc}") from None
        if access.status and access.status.allowed:
            return Verdict(ALLOWED, user=user.username)
        reason = f" ({access.status.reason})" if access.status and access.status.reason else ""
        return Verdict(
            FORBIDDEN,
            user=user.username,
            message=f'{user.username} may not {verb} {RESOURCE}/{SUBRESOURCE} "{self.name}" in namespace '
            f'"{self.namespace}"{reason}',
        )


def build_reviewer(target: str) -> KubernetesReviewer | None:
    return KubernetesReviewer(target) if target else None
