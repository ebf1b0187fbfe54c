"""parse_spec: defaults, and what the CRD cannot reject becomes InvalidSpec naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from modelservice_operator.api import InvalidSpec, VersionPolicy, parse_spec
from modelservice_operator.naming import child_name


def body(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"model": {"storageUri": "pvc://models/iris"}}
    base.update(spec)
    return {"metadata": {"name": "iris", "namespace": "ml", "generation": 1}, "spec": base}


def test_defaults_fill_what_the_user_left_out() -> None:
    spec = parse_spec(body())
    assert spec.model.name == "iris"
    assert (spec.model.storage.claim, spec.model.storage.path) == ("models", "iris")
    assert spec.model.policy == VersionPolicy()
    assert (spec.replicas, spec.runtime.workers, spec.startup_timeout_seconds) == (1, None, 600)
    assert spec.rollout.strategy == "rolling" and spec.gpu is None


def test_a_pinned_version_becomes_a_specific_policy() -> None:
    spec = parse_spec(body(model={"storageUri": "file:///models/iris", "version": "3"}))
    assert spec.model.policy.runtime_flag() == "specific:3"
    assert spec.model.storage.path == "/models/iris"


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"model": {"storageUri": "gs://bucket/iris"}}, "spec.model.storageUri", "use s3://<bucket>/<path> with"),
        ({"runtime": {"auth": {"apiKeys": {"secretRef": {"name": "Bad_Name"}}}}},
         "spec.runtime.auth.apiKeys.secretRef.name", "not a valid Secret name"),
        ({"runtime": {"auth": {"apiKeys": {"secretRef": {}}}}}, "spec.runtime.auth.apiKeys.secretRef.name",
         "is required"),
        ({"runtime": {"rateLimit": {"requestsPerSecond": 0}}}, "spec.runtime.rateLimit.requestsPerSecond",
         "must be above 0"),
        ({"runtime": {"rateLimit": {"requestsPerSecond": "lots"}}}, "spec.runtime.rateLimit.requestsPerSecond",
         "must be a number"),
        ({"runtime": {"cache": {"maxBytes": 10}}}, "spec.runtime.cache.maxBytes", "at least 1024"),
        ({"runtime": {"cache": {}}}, "spec.runtime.cache.maxBytes", "is required"),
        ({"model": {"storageUri": "pvc://m/x", "storage": {"secretRef": {"name": "s"}}}}, "spec.model.storage",
         "applies to s3:// and http(s):// sources, not pvc://"),
        ({"model": {"storageUri": "https://h/m.zip", "storage": {"region": "eu"}}}, "spec.model.storage",
         "apply to s3:// sources only"),
        ({"model": {"storageUri": "s3://b/m", "storage": {"endpoint": "minio:9000"}}},
         "spec.model.storage.endpoint", "must be http(s)://host[:port]"),
        ({"model": {"storageUri": "s3://b/m", "storage": {"secretRef": {"name": "Bad_Name"}}}},
         "spec.model.storage.secretRef.name", "not a valid Secret name"),
        ({"model": {"storageUri": "ftp://x/y"}}, "spec.model.storageUri", "unknown scheme"),
        ({"model": {"storageUri": "pvc://Bad_Claim/x"}}, "spec.model.storageUri", "pvc://<claim name>"),
        ({"model": {"storageUri": "file://relative"}}, "spec.model.storageUri", "absolute path"),
        ({"model": {"storageUri": "pvc://m/x", "version": "v2"}}, "spec.model.version", "version number"),
        ({"model": {"storageUri": "pvc://m/x", "version": "\u00b2"}}, "spec.model.version", "version number"),
        ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "spec.autoscaling.minReplicas", "less than or equal"),
        ({"autoscaling": {"metrics": "cpu"}}, "spec.autoscaling.metrics", "autoscaling/v2 MetricSpecs"),
        ({"autoscaling": {"metrics": [None]}}, "spec.autoscaling.metrics", "autoscaling/v2 MetricSpecs"),
        ({"autoscaling": {"metrics": [{"resource": {"name": "cpu"}}]}}, "spec.autoscaling.metrics", "each with a type"),
        ({"gpu": {"count": 2}, "resources": {"limits": {"nvidia.com/gpu": 1}}}, "spec.gpu.count", "is 2 but"),
        ({"rollout": {"strategy": "canary", "canary": {"steps": [{"setCanaryScale": {"replicas": 1}}]}}},
         "spec.rollout.canary.steps[0].setCanaryScale", "needs spec.rollout.canary.trafficRouting"),
        ({"rollout": {"strategy": "canary", "canary": {"steps": [{"setWeight": 20, "pause": {}}]}}},
         "spec.rollout.canary.steps[0]", "exactly one of"),
        ({"rollout": {"strategy": "canary", "canary": {"steps": [{"pause": {"duration": "2 minutes"}}]}}},
         "spec.rollout.canary.steps[0].pause.duration", "not a duration"),
        ({"rollout": {"strategy": "canary", "canary": {"steps": [{"pause": {"duration": "\u00b2"}}]}}},
         "spec.rollout.canary.steps[0].pause.duration", "not a duration"),
        ({"rollout": {"strategy": "canary", "canary": {"steps": [{"pause": {"duration": "\u0663m"}}]}}},
         "spec.rollout.canary.steps[0].pause.duration", "not a duration"),
        ({"rollout": {"strategy": "canary", "canary": {"steps": [{"setWeight": 120}]}}},
         "spec.rollout.canary.steps[0].setWeight", "0 to 100"),
        ({"rollout": {"strategy": "rolling", "blueGreen": {"previewReplicas": 1}}}, "spec.rollout.blueGreen",
         "only used with strategy blueGreen"),
        ({"rollout": {"strategy": "canary", "promote": {"step": 1}}}, "spec.rollout.promote.revision", "is required"),
        ({"rollout": {"analysis": {"provider": "prometheus"}}}, "spec.rollout.analysis.prometheus.address",
         "is required with provider prometheus"),
        ({"rollout": {"analysis": {"provider": "prometheus", "prometheus": {"address": "http://p:9090",
                                                                            "queries": {"errors": "x"}}}}},
         "spec.rollout.analysis.prometheus.queries", "unknown ['errors']"),
        ({"rollout": {"analysis": {"successRate": {"min": "1.5"}}}}, "spec.rollout.analysis.successRate.min",
         "between 0 and 1"),
        ({"rollout": {"analysis": {"onInconclusive": "Maybe"}}}, "spec.rollout.analysis.onInconclusive",
         "Pause or Abort"),
        ({"rollout": {"capacityPolicy": "Always"}}, "spec.rollout.capacityPolicy", "Auto, Surge, Swap"),
        ({"rollout": {"strategy": "canary", "promote": {"revision": "abc"}}}, "spec.rollout.promote",
         "set step"),
        ({"replicas": -1}, "spec.replicas", "at least 0"),
        ({"runtime": {"env": "A=1"}}, "spec.runtime.env", "must be a list"),
        ({"runtime": {"batching": {"maxBatchSize": 16, "allowedBatchSizes": [4, 8]}}},
         "spec.runtime.batching.allowedBatchSizes", "must end with maxBatchSize"),
        ({"runtime": {"batching": {"maxBatchSize": 8, "allowedBatchSizes": [4, 2, 8]}}},
         "spec.runtime.batching.allowedBatchSizes", "increasing order"),
        ({"runtime": {"batching": {"maxBatchSize": 0}}}, "spec.runtime.batching.maxBatchSize", "at least 1"),
        ({"runtime": {"tensorflow": {"intraOpParallelism": 0}}}, "spec.runtime.tensorflow.intraOpParallelism",
         "at least 1"),
        ({"runtime": {"tensorflow": {"interOpParallelism": -2}}}, "spec.runtime.tensorflow.interOpParallelism",
         "at least -1"),
        ({"runtime": {"tensorflow": 1}}, "spec.runtime.tensorflow", "must be an object"),
        ({"runtime": {"tensorflow": {"interOpParallelism": False}}}, "spec.runtime.tensorflow.interOpParallelism",
         "must be an integer"),
        ({"resources": {"requests": {"cpu": "lots"}}}, "spec.resources.requests.cpu", "not a quantity"),
        ({"resources": {"limits": {"memory": "2GB"}}}, "spec.resources.limits.memory", "not a quantity"),
        ({"resources": {"limits": {"memory": "\u0662Gi"}}}, "spec.resources.limits.memory", "not a quantity"),
        ({"resources": {"limits": {"not a resource!": "1"}}}, "spec.resources.limits", "not a resource name"),
        ({"gpu": {"count": 1, "resourceName": "not a resource!"}}, "spec.gpu.resourceName", "extended resource"),
        ({"scheduling": {"tolerations": [{"key": "k", "operator": "Sometimes"}]}},
         "spec.scheduling.tolerations[0].operator", "Exists or Equal"),
        ({"rollout": {"maxSurge": "lots"}}, "spec.rollout.maxSurge", "percentage"),
        ({"rollout": {"maxSurge": 0, "maxUnavailable": 0}}, "spec.rollout.maxSurge", "cannot both be 0"),
        ({"rollout": {"maxSurge": "0%", "maxUnavailable": "0%"}}, "spec.rollout.maxSurge", "cannot both be 0"),
    ],
)  # fmt: skip
def test_specs_the_operator_cannot_act_on_name_the_field(
    spec: dict[str, Any], field: str, words: str
) -> None:
    raw = body()
    raw["spec"].update(spec)
    with pytest.raises(InvalidSpec) as raised:
        parse_spec(raw)
    assert raised.value.field == field
    assert words in raised.value.message


def test_batching_becomes_the_runtimes_tf_serving_flags() -> None:
    spec = parse_spec(body(runtime={"batching": {"maxBatchSize": 16, "allowedBatchSizes": [4, 16],
                                                 "padVariableLengthInputs": True}}))  # fmt: skip
    assert spec.runtime.batching is not None
    assert spec.runtime.batching.runtime_flags() == [
        "--enable_batching", "--max_batch_size=16", "--batch_timeout_micros=1000", "--max_enqueued_batches=16",
        "--allowed_batch_sizes=4,16", "--pad_variable_length_inputs",
    ]  # fmt: skip
    assert parse_spec(body()).runtime.batching is None  # the runtime's default: on, TF Serving's parameters
    off = parse_spec(body(runtime={"batching": {"enabled": False, "maxBatchSize": 16}})).runtime.batching
    assert off is not None and off.runtime_flags() == ["--enable_batching=false"]
    with pytest.raises(InvalidSpec, match=r"spec\.runtime\.grpc\.enabled"):
        parse_spec(body(runtime={"grpc": {"enabled": 1}}))
    assert parse_spec(body(runtime={"grpc": {"enabled": True}})).runtime.grpc
    assert not parse_spec(body()).runtime.grpc
    with pytest.raises(InvalidSpec, match=r"spec\.runtime\.batching\.enabled"):
        parse_spec(body(runtime={"batching": {"enabled": "no"}}))


def test_canonical_and_non_canonical_quantities_are_both_valid() -> None:
    spec = parse_spec(
        body(resources={"requests": {"cpu": "0.5", "memory": "2048Mi"}, "limits": {"cpu": "1000m"}})
    )
    assert spec.resources == {"requests": {"cpu": "0.5", "memory": "2048Mi"}, "limits": {"cpu": "1000m"}}


def test_child_names_fit_63_characters_and_stay_distinct() -> None:
    a, b = child_name("x" * 80 + "a"), child_name("x" * 80 + "b")
    assert len(a) <= 63 and len(b) <= 63 and a != b
    assert child_name("iris", "canary") == "iris-canary"
    assert child_name("y" * 80, "canary").endswith("-canary") and len(child_name("y" * 80, "canary")) <= 63


def test_rollout_steps_durations_and_controls_parse() -> None:
    spec = parse_spec({"metadata": {"name": "m"}, "spec": {"model": {"storageUri": "pvc://m/x"}, "rollout": {
        "strategy": "canary", "progressDeadlineSeconds": 120,
        "canary": {"steps": [{"setWeight": 20}, {"pause": {"duration": "1h30m"}}, {"pause": {}}, {"analysis": {}}]},
        "promote": {"revision": "abc", "step": 2}, "retry": {"revision": "abc", "attempt": 3}}}})  # fmt: skip
    steps = spec.rollout.canary.steps
    assert [s.describe() for s in steps] == ["setWeight 20", "pause 1h30m", "pause", "analysis"]
    assert steps[1].pause_seconds == 5400 and steps[2].pause_seconds is None
    assert spec.rollout.promote is not None and spec.rollout.promote.step == 2
    assert spec.rollout.retry is not None and spec.rollout.retry.attempt == 3
    assert spec.rollout.progress_deadline_seconds == 120


def test_s3_and_http_sources_carry_their_credentials_endpoint_and_region() -> None:
    spec = parse_spec(body(model={"storageUri": "s3://models/iris", "storage": {
        "secretRef": {"name": "s3-creds"}, "endpoint": "http://minio:9000/", "region": "eu-west-1"}}))  # fmt: skip
    storage = spec.model.storage
    assert (storage.scheme, storage.uri, storage.secret_name, storage.endpoint, storage.region) == (
        "s3",
        "s3://models/iris",
        "s3-creds",
        "http://minio:9000",
        "eu-west-1",
    )
    assert storage.downloaded
    web = parse_spec(body(model={"storageUri": "https://h/iris.tar.gz"})).model.storage
    assert (web.scheme, web.uri, web.secret_name, web.downloaded) == (
        "https",
        "https://h/iris.tar.gz",
        "",
        True,
    )
    assert not parse_spec(body()).model.storage.downloaded
