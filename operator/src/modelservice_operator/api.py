"""The ModelService API as frozen dataclasses; ``parse_spec`` is the only reader of the raw dict.

Defaults live here and in the CRD, nowhere else. Anything the CRD cannot reject (it cannot know what this
operator version supports) raises ``InvalidSpec`` naming the field, which the operator reports as
``Ready=False, reason=InvalidSpec`` instead of retrying.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_STARTUP_TIMEOUT_SECONDS = 600
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
SUPPORTED_SCHEMES = ("pvc", "file", "s3", "http", "https")
DOWNLOADED_SCHEMES = ("s3", "http", "https")  # fetched by the storage initializer into an emptyDir
RESERVED_SCHEMES = ("gs",)
STRATEGIES = ("rolling", "canary", "blueGreen")
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600


class InvalidSpec(ValueError):
    """A spec the operator cannot act on; ``field`` is its path, e.g. ``spec.model.storageUri``."""

    def __init__(self, field_path: str, message: str) -> None:
        super().__init__(f"{field_path}: {message}")
        self.field = field_path
        self.message = message


@dataclass(frozen=True)
class VersionPolicy:
    kind: str = "latest"  # latest | all | specific
    latest: int = 1
    specific: tuple[int, ...] = ()

    def runtime_flag(self) -> str:
        """The runtime's --model_version_policy value."""
        if self.kind == "all":
            return "all"
        if self.kind == "specific":
            return "specific:" + ",".join(str(v) for v in self.specific)
        return f"latest:{self.latest}"


@dataclass(frozen=True)
class Storage:
    scheme: str
    claim: str = ""  # pvc only
    path: str = ""  # path inside the claim (pvc) or the image (file)
    uri: str = ""  # s3 / http(s): what the storage initializer downloads
    secret_name: str = ""  # spec.model.storage.secretRef.name: credentials for the download
    endpoint: str = ""  # s3: an S3-compatible endpoint (MinIO, Ceph, R2 ...); empty is AWS
    region: str = ""  # s3

    @property
    def downloaded(self) -> bool:
        return self.scheme in DOWNLOADED_SCHEMES


@dataclass(frozen=True)
class ModelSpec:
    name: str
    storage_uri: str
    storage: Storage
    version: str = ""
    policy: VersionPolicy = VersionPolicy()


@dataclass(frozen=True)
class BatchingSpec:
    """TF Serving's BatchingParameters; ``None`` fields are left to the runtime's defaults. The runtime
    batches by default (timeout 0); ``enabled: false`` turns it off."""

    enabled: bool = True
    max_batch_size: int = 32
    batch_timeout_micros: int = 1000
    max_enqueued_batches: int = 16
    num_batch_threads: int | None = None
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def runtime_flags(self) -> list[str]:
        if not self.enabled:
            return ["--enable_batching=false"]
        flags = [
            "--enable_batching",
            f"--max_batch_size={self.max_batch_size}",
            f"--batch_timeout_micros={self.batch_timeout_micros}",
            f"--max_enqueued_batches={self.max_enqueued_batches}",
        ]
        if self.num_batch_threads is not None:
            flags.append(f"--num_batch_threads={self.num_batch_threads}")
        if self.allowed_batch_sizes:
            flags.append("--allowed_batch_sizes=" + ",".join(str(s) for s in self.allowed_batch_sizes))
        if self.pad_variable_length_inputs:
            flags.append("--pad_variable_length_inputs")
        return flags


@dataclass(frozen=True)
class RateLimitSpec:
    """Per client (API key name) and model, for each pod: token buckets."""

    requests_per_second: float
    burst: int = 0  # 0: the rate rounded up

    def runtime_flags(self) -> list[str]:
        flags = [f"--rate_limit_requests_per_second={self.requests_per_second:g}"]
        if self.burst:
            flags.append(f"--rate_limit_burst={self.burst}")
        return flags


@dataclass(frozen=True)
class CacheSpec:
    """The pod's predict response cache, for deterministic models."""

    max_bytes: int
    ttl_seconds: int = 0

    def runtime_flags(self) -> list[str]:
        flags = [f"--response_cache_bytes={self.max_bytes}"]
        if self.ttl_seconds:
            flags.append(f"--response_cache_ttl_seconds={self.ttl_seconds}")
        return flags


@dataclass(frozen=True)
class RuntimeSpec:
    image: str = ""
    workers: int | None = None  # None: the runtime runs one HTTP worker per core the pod may use
    threads: int = 16
    grpc: bool = False  # TF Serving's gRPC API on 8500, on the pods and the Services
    env: tuple[Mapping[str, Any], ...] = ()
    batching: BatchingSpec | None = None
    api_keys_secret: str = ""  # spec.runtime.auth.apiKeys.secretRef.name: every model API needs a key
    tls_secret: str = ""  # spec.runtime.tls.secretRef.name (kubernetes.io/tls): REST and gRPC over TLS
    kubernetes_auth: bool = (
        False  # spec.runtime.auth.kubernetes.enabled: service-account tokens, RBAC-checked
    )
    rate_limit: RateLimitSpec | None = None
    cache: CacheSpec | None = None
    intra_op_parallelism: int | None = None  # spec.runtime.tensorflow: None is the runtime's default
    inter_op_parallelism: int | None = None


@dataclass(frozen=True)
class GpuSpec:
    count: int
    resource_name: str = DEFAULT_GPU_RESOURCE
    product: str = ""


@dataclass(frozen=True)
class SchedulingSpec:
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    affinity: Mapping[str, Any] = field(default_factory=dict)
    topology_spread_constraints: tuple[Mapping[str, Any], ...] = ()
    runtime_class_name: str = ""
    priority_class_name: str = ""


@dataclass(frozen=True)
class AutoscalingSpec:
    min_replicas: int
    max_replicas: int
    metrics: tuple[Mapping[str, Any], ...] = ()
    behavior: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CanaryScale:
    """``setCanaryScale`` (Gateway API only): a pod count, a weight, or back to the traffic weight."""

    replicas: int | None = None
    weight: int | None = None
    match_traffic_weight: bool = False


@dataclass(frozen=True)
class CanaryStep:
    """One step; exactly one field is set."""

    set_weight: int | None = None
    pause: bool = False
    pause_seconds: int | None = None  # None with pause=True: until promoted
    set_canary_scale: CanaryScale | None = None
    analysis: bool = False

    def describe(self) -> str:
        if self.set_weight is not None:
            return f"setWeight {self.set_weight}"
        if self.pause:
            return (
                f"pause {format_duration(self.pause_seconds)}" if self.pause_seconds is not None else "pause"
            )
        if self.set_canary_scale is not None:
            scale = self.set_canary_scale
            if scale.replicas is not None:
                return f"setCanaryScale {scale.replicas} pods"
            if scale.weight is not None:
                return f"setCanaryScale {scale.weight}%"
            return "setCanaryScale matchTrafficWeight"
        return "analysis"


@dataclass(frozen=True)
class CanarySpec:
    steps: tuple[CanaryStep, ...] = ()
    http_route: str = ""  # trafficRouting.gatewayAPI.httpRoute; "" = replica ratio behind <name>
    scale_down_delay_seconds: int = 30  # traffic-routed: the old stable keeps its pods while routes settle


@dataclass(frozen=True)
class BlueGreenSpec:
    preview_replicas: int | None = None  # None: full size
    auto_promotion_enabled: bool = True
    auto_promotion_seconds: int = 0
    scale_down_delay_seconds: int = 30
    pre_promotion_analysis: bool = False  # the preview must pass spec.rollout.analysis before promotion
    post_promotion_analysis: bool = False  # after the switch; a failure switches back to the old revision


@dataclass(frozen=True)
class Control:
    """promote / abort / retry, keyed to the revision (and attempt) they act on.

    **GitOps:** these are spec fields, so applying the same YAML again must neither repeat nor undo an
    action. Each names the revision it is meant for and is ignored for any other; promote names the step
    it approves (already passed: nothing happens); retry carries a monotonic attempt number (already
    reached: nothing happens); abort names the attempt it aborts, so a retry (a higher attempt) is not
    aborted again by the same YAML.
    """

    revision: str
    attempt: int = 0
    step: int | None = None  # promote: the step index approved (pause/analysis ends); None with full
    full: bool = False  # promote: skip every remaining step


@dataclass(frozen=True)
class AnalysisSpec:
    """``spec.rollout.analysis``: works with nothing set (the runtime's own /metrics, no Prometheus)."""

    provider: str = "runtime"
    interval_seconds: int = 30
    initial_delay_seconds: int = 0
    count: int = 3  # measurements an analysis step takes
    min_requests: int = 50  # fewer canary requests in a window: Inconclusive, never Failed
    success_rate: float = 0.99
    max_success_rate_drop: float | None = 0.01  # vs the stable over the same window
    latency_p99_ms: int | None = None
    max_latency_ratio: float | None = 1.5  # canary p99 / stable p99
    failure_limit: int = 0
    inconclusive_limit: int = 2
    consecutive_error_limit: int = 4
    on_inconclusive: str = "Pause"  # Pause | Abort
    background: bool = False  # also measure all along the canary, from its first step on
    prometheus_address: str = ""  # provider prometheus: the server's base URL
    prometheus_queries: Mapping[str, str] = field(default_factory=dict)  # requests, successRate, latencyP99Ms


@dataclass(frozen=True)
class RolloutSpec:
    strategy: str = "rolling"
    max_surge: int | str = "25%"
    max_unavailable: int | str = 0
    progress_deadline_seconds: int = DEFAULT_PROGRESS_DEADLINE_SECONDS
    progress_deadline_abort: bool = False
    capacity_policy: str = "Auto"  # Auto | Surge | Swap: how a rollout of GPU pods handles too few GPUs
    canary: CanarySpec = CanarySpec()
    blue_green: BlueGreenSpec = BlueGreenSpec()
    promote: Control | None = None
    abort: Control | None = None
    retry: Control | None = None
    analysis: AnalysisSpec = AnalysisSpec()


@dataclass(frozen=True)
class ModelServiceSpec:
    name: str  # metadata.name
    namespace: str
    model: ModelSpec
    uid: str = ""  # metadata.uid: children get an ownerReference when it is known
    runtime: RuntimeSpec = RuntimeSpec()
    replicas: int = 1
    resources: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    gpu: GpuSpec | None = None
    scheduling: SchedulingSpec = SchedulingSpec()
    autoscaling: AutoscalingSpec | None = None
    startup_timeout_seconds: int = DEFAULT_STARTUP_TIMEOUT_SECONDS
    rollout: RolloutSpec = RolloutSpec()

    @property
    def gpus(self) -> int:
        return self.gpu.count if self.gpu else 0


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidSpec(path, f"must be an object, got {type(value).__name__}")
    return value


# Kubernetes' quantity grammar (resource.Quantity): a decimal number, then a binary or decimal suffix or
# an exponent. The CRD's CEL isQuantity() checks the same at kubectl apply; this is for specs that did
# not pass through it (``modelservice-operator render``, an older CRD still installed).
_QUANTITY = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[kMGTPE]|[mnu])?$", re.ASCII)
_RESOURCE_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_INT_OR_PERCENT = re.compile(r"^[0-9]{1,3}%$")


def _quantities(raw: Any, path: str) -> dict[str, Any]:
    values = dict(_mapping(raw, path))
    for name, value in values.items():
        if not _RESOURCE_NAME.match(str(name)):
            raise InvalidSpec(path, f"{name!r} is not a resource name such as cpu, memory or nvidia.com/gpu")
        ok = (isinstance(value, int) and not isinstance(value, bool) and value >= 0) or (
            isinstance(value, str) and _QUANTITY.match(value)
        )
        if not ok:
            raise InvalidSpec(f"{path}.{name}", f"{value!r} is not a quantity such as 500m, 1, 2Gi or 512Mi")
    return values


def _surge(value: Any, path: str, default: int | str) -> int | str:
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and _INT_OR_PERCENT.match(value):
        return value
    raise InvalidSpec(path, f"{value!r} must be a number of pods (0 or more) or a percentage such as 25%")


def _is_zero(value: int | str) -> bool:
    return value == 0 or (isinstance(value, str) and value.rstrip("%").strip("0") == "")


def _int(value: Any, path: str, default: int, minimum: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSpec(path, f"must be an integer, got {value!r}")
    if value < minimum:
        raise InvalidSpec(path, f"must be at least {minimum}, got {value}")
    return value


_PVC = re.compile(r"^pvc://([a-z0-9]([-a-z0-9]*[a-z0-9])?)(/.*)?$")


_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def parse_storage(uri: str, raw: Any = None) -> Storage:
    """``spec.model.storageUri`` and ``spec.model.storage`` (credentials, endpoint, region)."""
    path = "spec.model.storageUri"
    scheme, sep, rest = uri.partition("://")
    if not sep or not rest:
        raise InvalidSpec(path, f"{uri!r} is not a URI of the form <scheme>://<location>")
    if scheme in RESERVED_SCHEMES:
        raise InvalidSpec(
            path,
            "gs:// is not supported by this operator version; Google Cloud Storage serves S3 clients: use "
            "s3://<bucket>/<path> with spec.model.storage.endpoint https://storage.googleapis.com and HMAC "
            "keys in the Secret",
        )
    if scheme not in SUPPORTED_SCHEMES:
        raise InvalidSpec(path, f"unknown scheme {scheme!r}; use pvc://, file://, s3://, http:// or https://")
    options = _mapping(raw, "spec.model.storage")
    secret = _mapping(options.get("secretRef"), "spec.model.storage.secretRef").get("name", "")
    endpoint = options.get("endpoint", "") or ""
    region = options.get("region", "") or ""
    for key, value in (("secretRef.name", secret), ("endpoint", endpoint), ("region", region)):
        if not isinstance(value, str):
            raise InvalidSpec(f"spec.model.storage.{key}", f"must be a string, got {value!r}")
    if scheme not in DOWNLOADED_SCHEMES and (secret or endpoint or region):
        raise InvalidSpec("spec.model.storage", f"applies to s3:// and http(s):// sources, not {scheme}://")
    if scheme != "s3" and (endpoint or region):
        raise InvalidSpec("spec.model.storage", "endpoint and region apply to s3:// sources only")
    if secret and not _DNS_SUBDOMAIN.match(secret):
        raise InvalidSpec("spec.model.storage.secretRef.name", f"{secret!r} is not a valid Secret name")
    if endpoint and not re.match(r"^https?://[^/\s]+/?$", endpoint):
        raise InvalidSpec("spec.model.storage.endpoint", f"{endpoint!r} must be http(s)://host[:port]")
    if scheme == "pvc":
        match = _PVC.match(uri)
        if not match:
            raise InvalidSpec(path, f"{uri!r} must be pvc://<claim name>/<path inside the claim>")
        return Storage("pvc", claim=match.group(1), path=(match.group(3) or "/").strip("/"))
    if scheme == "s3":
        bucket = rest.split("/", 1)[0]
        if not bucket:
            raise InvalidSpec(path, f"{uri!r} must be s3://<bucket>/<path>")
        return Storage("s3", uri=uri, secret_name=secret, endpoint=endpoint.rstrip("/"), region=region)
    if scheme in ("http", "https"):
        return Storage(scheme, uri=uri, secret_name=secret)
    if not rest.startswith("/"):
        raise InvalidSpec(path, f"{uri!r} must be an absolute path: file:///<path>")
    return Storage("file", path=rest)


def _toleration(raw: Any, path: str) -> Mapping[str, Any]:
    toleration = _mapping(raw, path)
    if toleration.get("operator", "Equal") not in ("Exists", "Equal"):
        raise InvalidSpec(f"{path}.operator", f"{toleration.get('operator')!r} must be Exists or Equal")
    if toleration.get("effect", "") not in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise InvalidSpec(
            f"{path}.effect",
            f"{toleration.get('effect')!r} must be NoSchedule, PreferNoSchedule or NoExecute",
        )
    return toleration


def _policy(model: Mapping[str, Any]) -> VersionPolicy:
    raw = _mapping(model.get("versionPolicy"), "spec.model.versionPolicy")
    if not raw:
        return VersionPolicy()
    if len(raw) != 1:
        raise InvalidSpec("spec.model.versionPolicy", "set exactly one of latest, all, specific")
    if "all" in raw:
        return VersionPolicy(kind="all")
    if "specific" in raw:
        versions = raw["specific"]
        if not isinstance(versions, list) or not versions or not all(isinstance(v, int) for v in versions):
            raise InvalidSpec("spec.model.versionPolicy.specific", "must be a non-empty list of versions")
        return VersionPolicy(kind="specific", specific=tuple(sorted(set(versions))))
    if "latest" in raw:
        return VersionPolicy(latest=_int(raw["latest"], "spec.model.versionPolicy.latest", 1, minimum=1))
    raise InvalidSpec("spec.model.versionPolicy", f"unknown policy {next(iter(raw))!r}")


def _tensorflow_threads(raw: Any) -> dict[str, int | None]:
    """``spec.runtime.tensorflow``: the model process's TF thread pools (None: the runtime's default)."""
    path = "spec.runtime.tensorflow"
    raw = _mapping(raw, path)
    intra = raw.get("intraOpParallelism")
    inter = _int(raw.get("interOpParallelism"), f"{path}.interOpParallelism", 0, minimum=-1)
    return {
        "intra_op_parallelism": (
            _int(intra, f"{path}.intraOpParallelism", 1, minimum=1) if intra is not None else None
        ),
        "inter_op_parallelism": inter if inter != 0 else None,  # 0: the runtime's default, as unset
    }


def parse_batching(raw: Any) -> BatchingSpec | None:
    """``spec.runtime.batching``, checked as the CRD's schema and CEL rules check it."""
    if raw is None:
        return None
    path = "spec.runtime.batching"
    raw = _mapping(raw, path)
    sizes_raw = raw.get("allowedBatchSizes") or []
    if not isinstance(sizes_raw, list):
        raise InvalidSpec(f"{path}.allowedBatchSizes", "must be a list of integers")
    sizes = tuple(_int(v, f"{path}.allowedBatchSizes[{i}]", 1, minimum=1) for i, v in enumerate(sizes_raw))
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise InvalidSpec(f"{path}.enabled", f"must be true or false, got {enabled!r}")
    batching = BatchingSpec(
        enabled=enabled,
        max_batch_size=_int(raw.get("maxBatchSize"), f"{path}.maxBatchSize", 32, minimum=1),
        batch_timeout_micros=_int(raw.get("batchTimeoutMicros"), f"{path}.batchTimeoutMicros", 1000),
        max_enqueued_batches=_int(raw.get("maxEnqueuedBatches"), f"{path}.maxEnqueuedBatches", 16, minimum=1),
        num_batch_threads=(
            _int(raw["numBatchThreads"], f"{path}.numBatchThreads", 1, minimum=1)
            if raw.get("numBatchThreads") is not None
            else None
        ),
        allowed_batch_sizes=sizes,
        pad_variable_length_inputs=bool(raw.get("padVariableLengthInputs", False)),
    )
    if sizes and sizes[-1] != batching.max_batch_size:
        raise InvalidSpec(f"{path}.allowedBatchSizes", "must end with maxBatchSize")
    if list(sizes) != sorted(set(sizes)):
        raise InvalidSpec(f"{path}.allowedBatchSizes", "must be in increasing order")
    return batching


def _grpc_enabled(raw: Any) -> bool:
    if raw is None:
        return False
    enabled = _mapping(raw, "spec.runtime.grpc").get("enabled", False)
    if not isinstance(enabled, bool):
        raise InvalidSpec("spec.runtime.grpc.enabled", f"must be true or false, got {enabled!r}")
    return enabled


def _api_keys_secret(raw: Any) -> str:
    auth = _mapping(raw, "spec.runtime.auth")
    keys = _mapping(auth.get("apiKeys"), "spec.runtime.auth.apiKeys")
    name = _mapping(keys.get("secretRef"), "spec.runtime.auth.apiKeys.secretRef").get("name", "")
    if keys and not name:
        raise InvalidSpec("spec.runtime.auth.apiKeys.secretRef.name", "is required")
    if name and (not isinstance(name, str) or not _DNS_SUBDOMAIN.match(name)):
        raise InvalidSpec("spec.runtime.auth.apiKeys.secretRef.name", f"{name!r} is not a valid Secret name")
    return str(name)


def _kubernetes_auth(raw: Any) -> bool:
    kubernetes = _mapping(
        _mapping(raw, "spec.runtime.auth").get("kubernetes"), "spec.runtime.auth.kubernetes"
    )
    enabled = kubernetes.get("enabled", False)
    if not isinstance(enabled, bool):
        raise InvalidSpec("spec.runtime.auth.kubernetes.enabled", f"must be true or false, got {enabled!r}")
    return enabled


def _tls_secret(raw: Any) -> str:
    tls = _mapping(raw, "spec.runtime.tls")
    if not tls:
        return ""
    name = _mapping(tls.get("secretRef"), "spec.runtime.tls.secretRef").get("name", "")
    if not name:
        raise InvalidSpec("spec.runtime.tls.secretRef.name", "is required")
    if not isinstance(name, str) or not _DNS_SUBDOMAIN.match(name):
        raise InvalidSpec("spec.runtime.tls.secretRef.name", f"{name!r} is not a valid Secret name")
    return name


def _rate_limit(raw: Any) -> RateLimitSpec | None:
    if raw is None:
        return None
    limit = _mapping(raw, "spec.runtime.rateLimit")
    rate = limit.get("requestsPerSecond")
    if isinstance(rate, bool) or not isinstance(rate, (int, float, str)):
        raise InvalidSpec("spec.runtime.rateLimit.requestsPerSecond", f"must be a number, got {rate!r}")
    try:
        value = float(rate)
    except ValueError:
        raise InvalidSpec(
            "spec.runtime.rateLimit.requestsPerSecond", f"must be a number, got {rate!r}"
        ) from None
    if not 0 < value <= 1_000_000:
        raise InvalidSpec("spec.runtime.rateLimit.requestsPerSecond", f"must be above 0, got {rate!r}")
    return RateLimitSpec(value, _int(limit.get("burst"), "spec.runtime.rateLimit.burst", 0, minimum=1))


def _cache(raw: Any) -> CacheSpec | None:
    if raw is None:
        return None
    cache = _mapping(raw, "spec.runtime.cache")
    if cache.get("maxBytes") is None:
        raise InvalidSpec("spec.runtime.cache.maxBytes", "is required")
    max_bytes = _int(cache.get("maxBytes"), "spec.runtime.cache.maxBytes", 0, minimum=1024)
    return CacheSpec(max_bytes, _int(cache.get("ttlSeconds"), "spec.runtime.cache.ttlSeconds", 0, minimum=1))


def parse_spec(body: Mapping[str, Any]) -> ModelServiceSpec:
    """A ModelService object (metadata + spec) -> ModelServiceSpec, or InvalidSpec."""
    metadata = _mapping(body.get("metadata"), "metadata")
    spec = _mapping(body.get("spec"), "spec")
    name = str(metadata.get("name", ""))
    namespace = str(metadata.get("namespace", "default"))

    model_raw = _mapping(spec.get("model"), "spec.model")
    uri = model_raw.get("storageUri")
    if not isinstance(uri, str) or not uri:
        raise InvalidSpec("spec.model.storageUri", "is required")
    version = str(model_raw.get("version", "") or "")
    if version and not (version.isascii() and version.isdigit()):  # '²' is a digit only to isdigit()
        raise InvalidSpec("spec.model.version", f"must be a version number, got {version!r}")
    policy = _policy(model_raw)
    if version and model_raw.get("versionPolicy"):
        raise InvalidSpec("spec.model.version", "cannot be combined with spec.model.versionPolicy")
    if version:
        policy = VersionPolicy(kind="specific", specific=(int(version),))
    model = ModelSpec(
        name=str(model_raw.get("name") or name),
        storage_uri=uri,
        storage=parse_storage(uri, model_raw.get("storage")),
        version=version,
        policy=policy,
    )

    runtime_raw = _mapping(spec.get("runtime"), "spec.runtime")
    env = runtime_raw.get("env") or []
    if not isinstance(env, list):
        raise InvalidSpec("spec.runtime.env", "must be a list of {name, value} objects")
    runtime = RuntimeSpec(
        image=str(runtime_raw.get("image") or ""),
        workers=(
            _int(runtime_raw["workers"], "spec.runtime.workers", 1, minimum=1)
            if runtime_raw.get("workers") is not None
            else None
        ),
        threads=_int(runtime_raw.get("threads"), "spec.runtime.threads", 16, minimum=1),
        grpc=_grpc_enabled(runtime_raw.get("grpc")),
        env=tuple(_mapping(e, f"spec.runtime.env[{i}]") for i, e in enumerate(env)),
        batching=parse_batching(runtime_raw.get("batching")),
        api_keys_secret=_api_keys_secret(runtime_raw.get("auth")),
        tls_secret=_tls_secret(runtime_raw.get("tls")),
        kubernetes_auth=_kubernetes_auth(runtime_raw.get("auth")),
        rate_limit=_rate_limit(runtime_raw.get("rateLimit")),
        cache=_cache(runtime_raw.get("cache")),
        **_tensorflow_threads(runtime_raw.get("tensorflow")),
    )

    gpu = None
    gpu_raw = spec.get("gpu")
    if gpu_raw is not None:
        gpu_raw = _mapping(gpu_raw, "spec.gpu")
        gpu = GpuSpec(
            count=_int(gpu_raw.get("count"), "spec.gpu.count", 1, minimum=1),
            resource_name=str(gpu_raw.get("resourceName") or DEFAULT_GPU_RESOURCE),
            product=str(gpu_raw.get("product") or ""),
        )
        if "/" not in gpu.resource_name or not _RESOURCE_NAME.match(gpu.resource_name):
            raise InvalidSpec(
                "spec.gpu.resourceName",
                f"{gpu.resource_name!r} is not an extended resource name such as nvidia.com/gpu",
            )

    resources_raw = _mapping(spec.get("resources"), "spec.resources")
    resources = {
        key: _quantities(resources_raw.get(key), f"spec.resources.{key}")
        for key in ("requests", "limits")
        if resources_raw.get(key)
    }
    if gpu:
        for key, values in resources.items():
            if gpu.resource_name in values and str(values[gpu.resource_name]) != str(gpu.count):
                raise InvalidSpec(
                    "spec.gpu.count",
                    f"is {gpu.count} but spec.resources.{key}[{gpu.resource_name}] is "
                    f"{values[gpu.resource_name]}",
                )

    sched_raw = _mapping(spec.get("scheduling"), "spec.scheduling")
    scheduling = SchedulingSpec(
        node_selector={
            str(k): str(v)
            for k, v in _mapping(sched_raw.get("nodeSelector"), "spec.scheduling.nodeSelector").items()
        },
        tolerations=tuple(
            _toleration(t, f"spec.scheduling.tolerations[{i}]")
            for i, t in enumerate(sched_raw.get("tolerations") or ())
        ),
        affinity=_mapping(sched_raw.get("affinity"), "spec.scheduling.affinity"),
        topology_spread_constraints=tuple(sched_raw.get("topologySpreadConstraints") or ()),
        runtime_class_name=str(sched_raw.get("runtimeClassName") or ""),
        priority_class_name=str(sched_raw.get("priorityClassName") or ""),
    )

    autoscaling = None
    auto_raw = spec.get("autoscaling")
    if auto_raw is not None:
        auto_raw = _mapping(auto_raw, "spec.autoscaling")
        minimum = _int(auto_raw.get("minReplicas"), "spec.autoscaling.minReplicas", 1, minimum=1)
        maximum = _int(auto_raw.get("maxReplicas"), "spec.autoscaling.maxReplicas", minimum, minimum=1)
        if minimum > maximum:
            raise InvalidSpec(
                "spec.autoscaling.minReplicas",
                f"({minimum}) must be less than or equal to spec.autoscaling.maxReplicas ({maximum})",
            )
        metrics = auto_raw.get("metrics") or []
        if not isinstance(metrics, list) or not all(
            isinstance(m, Mapping) and isinstance(m.get("type"), str) for m in metrics
        ):
            raise InvalidSpec(
                "spec.autoscaling.metrics", "must be a list of autoscaling/v2 MetricSpecs, each with a type"
            )
        autoscaling = AutoscalingSpec(
            min_replicas=minimum,
            max_replicas=maximum,
            metrics=tuple(metrics),
            behavior=_mapping(auto_raw.get("behavior"), "spec.autoscaling.behavior"),
        )

    rollout = parse_rollout(spec.get("rollout"))

    probes = _mapping(spec.get("probes"), "spec.probes")
    return ModelServiceSpec(
        name=name,
        namespace=namespace,
        uid=str(metadata.get("uid") or ""),
        model=model,
        runtime=runtime,
        replicas=_int(spec.get("replicas"), "spec.replicas", 1),
        resources=resources,
        gpu=gpu,
        scheduling=scheduling,
        autoscaling=autoscaling,
        startup_timeout_seconds=_int(
            probes.get("startupTimeoutSeconds"),
            "spec.probes.startupTimeoutSeconds",
            DEFAULT_STARTUP_TIMEOUT_SECONDS,
            minimum=10,
        ),
        rollout=rollout,
    )


_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$", re.ASCII)


def parse_duration(value: Any, path: str) -> int:
    """Seconds from ``90``, ``"90"``, ``"30s"``, ``"2m"``, ``"1h30m"`` (Argo Rollouts' pause durations)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    text = str(value).strip()
    if text.isascii() and text.isdigit():
        return int(text)
    match = _DURATION.match(text)
    if not text or not match:
        raise InvalidSpec(path, f"{value!r} is not a duration such as 30s, 2m or 1h")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    total = max(0, int(seconds + 0.999))
    minutes, secs = divmod(total, 60)
    hours, minutes = divmod(minutes, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return text or "0s"


def _weight(value: Any, path: str) -> int:
    weight = _int(value, path, 0)
    if weight > 100:
        raise InvalidSpec(path, f"must be a percentage from 0 to 100, got {weight}")
    return weight


def _step(raw: Any, path: str, routed: bool) -> CanaryStep:
    step = _mapping(raw, path)
    if len(step) != 1:
        raise InvalidSpec(path, "set exactly one of setWeight, pause, setCanaryScale, analysis")
    key, value = next(iter(step.items()))
    if key == "setWeight":
        return CanaryStep(set_weight=_weight(value, f"{path}.setWeight"))
    if key == "pause":
        pause = _mapping(value, f"{path}.pause")
        if pause.get("duration") is None:
            return CanaryStep(pause=True)
        return CanaryStep(
            pause=True, pause_seconds=parse_duration(pause["duration"], f"{path}.pause.duration")
        )
    if key == "setCanaryScale":
        if not routed:
            raise InvalidSpec(
                f"{path}.setCanaryScale",
                "needs spec.rollout.canary.trafficRouting: without a router the canary's share of traffic "
                "is its share of the pods",
            )
        scale = _mapping(value, f"{path}.setCanaryScale")
        if len(scale) != 1:
            raise InvalidSpec(
                f"{path}.setCanaryScale", "set exactly one of replicas, weight, matchTrafficWeight"
            )
        if "replicas" in scale:
            return CanaryStep(
                set_canary_scale=CanaryScale(
                    replicas=_int(scale["replicas"], f"{path}.setCanaryScale.replicas", 0)
                )
            )
        if "weight" in scale:
            return CanaryStep(
                set_canary_scale=CanaryScale(weight=_weight(scale["weight"], f"{path}.setCanaryScale.weight"))
            )
        if scale.get("matchTrafficWeight") is True:
            return CanaryStep(set_canary_scale=CanaryScale(match_traffic_weight=True))
        raise InvalidSpec(
            f"{path}.setCanaryScale", "set exactly one of replicas, weight, matchTrafficWeight: true"
        )
    if key == "analysis":
        _mapping(value, f"{path}.analysis")
        return CanaryStep(analysis=True)
    raise InvalidSpec(path, f"unknown step {key!r}; use setWeight, pause, setCanaryScale or analysis")


def _control(raw: Any, path: str, promote: bool = False) -> Control | None:
    if raw is None:
        return None
    control = _mapping(raw, path)
    revision = control.get("revision")
    if not isinstance(revision, str) or not revision:
        raise InvalidSpec(f"{path}.revision", "is required: the revision (status.canary.revision) it acts on")
    full = bool(control.get("full", False)) if promote else False
    step = control.get("step") if promote else None
    if promote and step is None and not full:
        raise InvalidSpec(path, "set step (the step index to approve) or full: true")
    return Control(
        revision=revision,
        attempt=_int(control.get("attempt"), f"{path}.attempt", 0),
        step=_int(step, f"{path}.step", 0) if step is not None else None,
        full=full,
    )


def _fraction(value: Any, path: str, default: float | None, maximum: float = 1.0) -> float | None:
    """A ratio written as a string ("0.99"): the CRD keeps floats out of the spec."""
    if value is None:
        return default
    try:
        number = float(str(value))
    except ValueError:
        raise InvalidSpec(path, f'{value!r} is not a number such as "0.99"') from None
    if not 0 <= number <= maximum:
        raise InvalidSpec(path, f"{value!r} must be between 0 and {maximum:g}")
    return number


def parse_analysis(raw_value: Any) -> AnalysisSpec:
    path = "spec.rollout.analysis"
    raw = _mapping(raw_value, path)
    provider = str(raw.get("provider") or "runtime")
    if provider not in ("runtime", "prometheus"):
        raise InvalidSpec(f"{path}.provider", f"{provider!r} must be runtime or prometheus")
    prometheus = _mapping(raw.get("prometheus"), f"{path}.prometheus")
    address = str(prometheus.get("address") or "")
    if provider == "prometheus" and not address.startswith(("http://", "https://")):
        raise InvalidSpec(
            f"{path}.prometheus.address", "is required with provider prometheus: http(s)://host:port"
        )
    queries = _mapping(prometheus.get("queries"), f"{path}.prometheus.queries")
    unknown = set(queries) - {"requests", "successRate", "latencyP99Ms"}
    if unknown:
        raise InvalidSpec(
            f"{path}.prometheus.queries",
            f"unknown {sorted(unknown)}: use requests, successRate, latencyP99Ms",
        )
    success = _mapping(raw.get("successRate"), f"{path}.successRate")
    latency = _mapping(raw.get("latencyP99"), f"{path}.latencyP99")
    on_inconclusive = str(raw.get("onInconclusive") or "Pause")
    if on_inconclusive not in ("Pause", "Abort"):
        raise InvalidSpec(f"{path}.onInconclusive", f"{on_inconclusive!r} must be Pause or Abort")
    default = AnalysisSpec()
    return AnalysisSpec(
        provider=provider,
        interval_seconds=max(1, parse_duration(raw.get("interval", "30s"), f"{path}.interval")),
        initial_delay_seconds=parse_duration(raw.get("initialDelay", 0), f"{path}.initialDelay"),
        count=_int(raw.get("count"), f"{path}.count", default.count, minimum=1),
        min_requests=_int(raw.get("minRequests"), f"{path}.minRequests", default.min_requests),
        success_rate=_fraction(success.get("min"), f"{path}.successRate.min", default.success_rate) or 0.0,
        max_success_rate_drop=_fraction(
            success.get("maxDropVsStable"),
            f"{path}.successRate.maxDropVsStable",
            default.max_success_rate_drop,
        ),
        latency_p99_ms=_int(latency["maxMs"], f"{path}.latencyP99.maxMs", 0, minimum=1)
        if latency.get("maxMs")
        else None,
        max_latency_ratio=_fraction(
            latency.get("maxRatioVsStable"),
            f"{path}.latencyP99.maxRatioVsStable",
            default.max_latency_ratio,
            maximum=1000,
        ),
        failure_limit=_int(raw.get("failureLimit"), f"{path}.failureLimit", default.failure_limit),
        inconclusive_limit=_int(
            raw.get("inconclusiveLimit"), f"{path}.inconclusiveLimit", default.inconclusive_limit
        ),
        consecutive_error_limit=_int(
            raw.get("consecutiveErrorLimit"), f"{path}.consecutiveErrorLimit", default.consecutive_error_limit
        ),
        on_inconclusive=on_inconclusive,
        background=bool(raw.get("background", False)),
        prometheus_address=address.rstrip("/"),
        prometheus_queries={str(k): str(v) for k, v in queries.items()},
    )


CAPACITY_POLICIES = ("Auto", "Surge", "Swap")


def _capacity_policy(value: Any) -> str:
    policy = str(value or "Auto")
    if policy not in CAPACITY_POLICIES:
        raise InvalidSpec(
            "spec.rollout.capacityPolicy", f"{policy!r} must be one of {', '.join(CAPACITY_POLICIES)}"
        )
    return policy


def parse_rollout(raw_value: Any) -> RolloutSpec:
    """``spec.rollout``: the strategy, its steps or blue-green settings, and the GitOps controls."""
    raw = _mapping(raw_value, "spec.rollout")
    strategy = str(raw.get("strategy") or "rolling")
    if strategy not in STRATEGIES:
        raise InvalidSpec("spec.rollout.strategy", f"must be one of {', '.join(STRATEGIES)}")
    canary_raw = _mapping(raw.get("canary"), "spec.rollout.canary")
    routing = _mapping(canary_raw.get("trafficRouting"), "spec.rollout.canary.trafficRouting")
    gateway = _mapping(routing.get("gatewayAPI"), "spec.rollout.canary.trafficRouting.gatewayAPI")
    route = str(gateway.get("httpRoute") or "")
    if gateway and not route:
        raise InvalidSpec("spec.rollout.canary.trafficRouting.gatewayAPI.httpRoute", "is required")
    steps_raw = canary_raw.get("steps") or []
    if not isinstance(steps_raw, list):
        raise InvalidSpec("spec.rollout.canary.steps", "must be a list of steps")
    steps = tuple(_step(s, f"spec.rollout.canary.steps[{i}]", bool(route)) for i, s in enumerate(steps_raw))
    if strategy != "canary" and (steps or route):
        raise InvalidSpec("spec.rollout.canary", f"is only used with strategy canary, not {strategy}")
    bg_raw = _mapping(raw.get("blueGreen"), "spec.rollout.blueGreen")
    if strategy != "blueGreen" and bg_raw:
        raise InvalidSpec("spec.rollout.blueGreen", f"is only used with strategy blueGreen, not {strategy}")
    path = "spec.rollout.blueGreen"
    blue_green = BlueGreenSpec(
        preview_replicas=(
            _int(bg_raw["previewReplicas"], f"{path}.previewReplicas", 1, minimum=1)
            if bg_raw.get("previewReplicas") is not None
            else None
        ),
        auto_promotion_enabled=bool(bg_raw.get("autoPromotionEnabled", True)),
        auto_promotion_seconds=_int(bg_raw.get("autoPromotionSeconds"), f"{path}.autoPromotionSeconds", 0),
        scale_down_delay_seconds=_int(
            bg_raw.get("scaleDownDelaySeconds"), f"{path}.scaleDownDelaySeconds", 30
        ),
        pre_promotion_analysis=bool(bg_raw.get("prePromotionAnalysis", False)),
        post_promotion_analysis=bool(bg_raw.get("postPromotionAnalysis", False)),
    )
    rollout = RolloutSpec(
        strategy=strategy,
        max_surge=_surge(raw.get("maxSurge"), "spec.rollout.maxSurge", "25%"),
        max_unavailable=_surge(raw.get("maxUnavailable"), "spec.rollout.maxUnavailable", 0),
        progress_deadline_seconds=_int(
            raw.get("progressDeadlineSeconds"),
            "spec.rollout.progressDeadlineSeconds",
            DEFAULT_PROGRESS_DEADLINE_SECONDS,
            minimum=1,
        ),
        progress_deadline_abort=bool(raw.get("progressDeadlineAbort", False)),
        capacity_policy=_capacity_policy(raw.get("capacityPolicy")),
        canary=CanarySpec(
            steps=steps,
            http_route=route,
            scale_down_delay_seconds=_int(
                canary_raw.get("scaleDownDelaySeconds"), "spec.rollout.canary.scaleDownDelaySeconds", 30
            ),
        ),
        blue_green=blue_green,
        promote=_control(raw.get("promote"), "spec.rollout.promote", promote=True),
        abort=_control(raw.get("abort"), "spec.rollout.abort"),
        retry=_control(raw.get("retry"), "spec.rollout.retry"),
        analysis=parse_analysis(raw.get("analysis")),
    )
    if _is_zero(rollout.max_surge) and _is_zero(rollout.max_unavailable):
        raise InvalidSpec(
            "spec.rollout.maxSurge",
            "and spec.rollout.maxUnavailable cannot both be 0: no pod could ever be replaced",
        )
    return rollout
