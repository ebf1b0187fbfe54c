"""Runtime configuration: TensorFlow Serving's flags and environment, plus a few of our own.

**For drop-in compatibility,** the flag names are TF Serving's (``--model_name``, ``--model_base_path``,
``--rest_api_port``, ``--model_config_file`` ...), ``--flag=value`` and ``--flag value`` both work, and the
environment follows the ``tensorflow/serving`` image: ``MODEL_NAME`` and ``MODEL_BASE_PATH`` (default
``/models``) give ``$MODEL_BASE_PATH/$MODEL_NAME``. The model config file is TF Serving's text-proto
``model_config_list``, parsed with the real ``tensorflow_serving.config`` protos.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .batcher import BatchingConfigError, BatchingParameters


class ConfigError(ValueError):
    """A configuration the server cannot start with; the message says which flag or file is wrong."""


@dataclass(frozen=True)
class VersionPolicy:
    """TF Serving's ``ServableVersionPolicy``: latest N (default 1), all, or specific versions."""

    kind: str = "latest"  # latest | all | specific
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, on_disk: Sequence[int]) -> set[int]:
        """The versions to serve out of those found on disk."""
        if self.kind == "all":
            return set(on_disk)
        if self.kind == "specific":
            return set(self.versions) & set(on_disk)
        return set(sorted(on_disk)[-self.num_versions :]) if self.num_versions > 0 else set()


@dataclass(frozen=True)
class ModelConfig:
    name: str
    base_path: str
    policy: VersionPolicy = VersionPolicy()
    labels: Mapping[str, int] = field(default_factory=dict)


CPU_REQUEST_ENV = "MODELSERVICE_CPU_REQUEST"
NVIDIA_ENV = "NVIDIA_VISIBLE_DEVICES"


def visible_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs the NVIDIA device plugin gave this container (``NVIDIA_VISIBLE_DEVICES``: indices or
    UUIDs), or [] when it names none or does not list them ("all", "none", "void", unset)."""
    env = os.environ if environ is None else environ
    value = env.get(NVIDIA_ENV, "").strip()
    if value.lower() in ("", "all", "none", "void"):
        return []
    return [part.strip() for part in value.split(",") if part.strip()]


def _cgroup_quota_cores(root: Path) -> int | None:
    """Whole cores of the container's CPU limit: cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else max(1, int(quota) // int(period))
    except (OSError, ValueError):
        pass
    try:
        quota_v1 = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_v1 = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_v1 <= 0 else max(1, quota_v1 // period_v1)
    except (OSError, ValueError):
        return None


def _cpu_count(environ: Mapping[str, str] | None = None, cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this pod may use: CPU affinity, capped by the cgroup CPU limit and by the CPU request the
    operator passes down (``MODELSERVICE_CPU_REQUEST``, whole cores rounded up by the downward API), so a
    pod that asked for 2 cores on a 64-core node runs 2 workers, not 64."""
    env = os.environ if environ is None else environ
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = os.cpu_count() or 1
    limit = _cgroup_quota_cores(cgroup_root)
    if limit is not None:
        cores = min(cores, limit)
    try:
        request = int(env.get(CPU_REQUEST_ENV, "0"))
    except ValueError:
        request = 0
    if request > 0:
        cores = min(cores, request)
    return max(1, cores)


@dataclass(frozen=True)
class SslConfig:
    """TF Serving's ``SSLConfig`` (``--ssl_config_file``): PEM contents, not paths, for the gRPC port."""

    server_key: str = field(repr=False)  # never in a log line or a traceback's locals
    server_cert: str
    custom_ca: str = ""
    client_verify: bool = False


@dataclass(frozen=True)
class RuntimeConfig:
    models: tuple[ModelConfig, ...] = ()
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: float = 0.0
    file_system_poll_wait_seconds: float = 1.0
    rest_api_host: str = "0.0.0.0"
    rest_api_port: int = 8501
    rest_api_timeout_in_ms: int = 30000
    workers: int = 1
    threads: int = 16
    worker_timeout_seconds: int = 60
    graceful_timeout_seconds: int = 30
    client_timeout_seconds: float = 60.0
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    enable_model_warmup: bool = True
    max_request_bytes: int = 64 * 1024 * 1024
    batching: BatchingParameters | None = None
    max_queue_delay_ms: int = 0
    model_processes: int = 1
    grpc_port: int = 8500
    drain_seconds: float = 0.0
    per_process_gpu_memory_fraction: float = 0.0
    tensorflow_gpu_device: str = ""
    log_format: str = "json"
    log_level: str = "info"
    enable_signature_method_name_check: bool = False
    monitoring_config_file: str = ""
    prometheus_path: str = ""  # where --monitoring_config_file asks for Prometheus metrics ("" if not)
    api_keys_dir: str = ""  # a mounted Secret, one file per API key; "" leaves the APIs open
    auth_metrics: bool = False  # /metrics needs a credential too
    kubernetes_auth: str = ""  # <namespace>/<name> of the ModelService whose predict right a token needs
    tls_cert_file: str = ""  # TLS on the REST and gRPC ports (PEM), reloaded when it changes
    tls_key_file: str = ""
    ssl_config: SslConfig | None = None  # gRPC's TLS (and client certificates) from --ssl_config_file
    rate_limit_requests_per_second: float = 0.0  # per client and model, for the pod; 0 is no limit
    rate_limit_burst: int = 0  # bucket size; 0 is the rate rounded up
    response_cache_bytes: int = 0  # the pod's predict response cache; 0 is off
    response_cache_ttl_seconds: float = 0.0  # 0: entries leave only when the bound needs room

    def intra_op_threads(self) -> int:
        """TF threads of the model process: every core (the flag wins when set). The HTTP workers
        hold no TensorFlow, so the one process that runs models gets the whole pod."""
        if self.tensorflow_intra_op_parallelism > 0:
            return self.tensorflow_intra_op_parallelism
        return _cpu_count()

    def inter_op_threads(self) -> int:
        """TF's inter-op setting for the model process: the flag as TensorFlow reads it (> 0: a pool of
        that many threads; < 0: every op runs in the thread that runs the model), or 0 when it is not
        set, for ``loader.configure_runtime`` to choose once it knows whether there is a GPU."""
        return self.tensorflow_inter_op_parallelism

    def with_models(self, models: Sequence[ModelConfig]) -> RuntimeConfig:
        return replace(self, models=tuple(models))


def parse_model_config_text(text: str, source: str = "<model config>") -> tuple[ModelConfig, ...]:
    """Parse TF Serving's ``ModelServerConfig`` text proto (``model_config_list { config { ... } }``)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    proto = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as exc:
        # With the words TF Serving logs (the protobuf library's), which its tests and users look for.
        raise ConfigError(
            f"{source}: not a valid model_config_list text proto. Error parsing text-format "
            f"{proto.DESCRIPTOR.full_name}: {exc}"
        ) from None
    if proto.WhichOneof("config") != "model_config_list":
        raise ConfigError(f"{source}: expected a 'model_config_list' (custom_model_config is not supported)")
    models = []
    names = set()
    for entry in proto.model_config_list.config:
        if not entry.name:
            raise ConfigError(f"{source}: every config needs a 'name'")
        if entry.name in names:
            raise ConfigError(f"{source}: model name '{entry.name}' appears twice")
        if not entry.base_path:
            raise ConfigError(f"{source}: model '{entry.name}' needs a 'base_path'")
        if entry.model_platform not in ("", "tensorflow"):
            raise ConfigError(
                f"{source}: model '{entry.name}' has model_platform '{entry.model_platform}'; "
                "only 'tensorflow' is served"
            )
        names.add(entry.name)
        policy_kind = entry.model_version_policy.WhichOneof("policy_choice")
        if policy_kind == "all":
            policy = VersionPolicy(kind="all")
        elif policy_kind == "specific":
            versions = tuple(entry.model_version_policy.specific.versions)
            if not versions:
                raise ConfigError(f"{source}: model '{entry.name}' has an empty 'specific' policy")
            policy = VersionPolicy(kind="specific", versions=versions)
        elif policy_kind == "latest":
            policy = VersionPolicy(num_versions=entry.model_version_policy.latest.num_versions or 1)
        else:
            policy = VersionPolicy()
        models.append(
            ModelConfig(
                name=entry.name,
                base_path=entry.base_path,
                policy=policy,
                labels=dict(entry.version_labels),
            )
        )
    return tuple(models)


_BATCHING_PROTO: Any = None
_MONITORING_PROTO: Any = None
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's PrometheusExporter::kPrometheusPath


def _message_class(file: Any, full_name: str, *dependencies: Any) -> Any:
    """The message class ``full_name`` of a file descriptor built at run time (TF Serving's config protos
    that ``tensorflow-serving-api`` does not ship), in a pool of its own."""
    from google.protobuf import descriptor_pool, message_factory

    pool = descriptor_pool.DescriptorPool()
    for dependency in dependencies:
        pool.AddSerializedFile(dependency.serialized_pb)
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))


def _monitoring_message() -> Any:
    """TF Serving's ``MonitoringConfig`` (``monitoring_config.proto``, not in ``tensorflow-serving-api``),
    built at run time as ``_batching_message`` builds its message: text format needs only names and types."""
    global _MONITORING_PROTO
    if _MONITORING_PROTO is None:
        from google.protobuf import descriptor_pb2

        field = descriptor_pb2.FieldDescriptorProto
        file = descriptor_pb2.FileDescriptorProto(
            name="tensorflow_serving/config/monitoring_config.proto",
            package="tensorflow.serving",
            syntax="proto3",
        )
        prometheus = file.message_type.add(name="PrometheusConfig")
        prometheus.field.add(name="enable", number=1, type=field.TYPE_BOOL, label=field.LABEL_OPTIONAL)
        prometheus.field.add(name="path", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
        monitoring = file.message_type.add(name="MonitoringConfig")
        monitoring.field.add(name="prometheus_config", number=1, type=field.TYPE_MESSAGE,
                             type_name=".tensorflow.serving.PrometheusConfig", label=field.LABEL_OPTIONAL)  # fmt: skip
        _MONITORING_PROTO = _message_class(file, "tensorflow.serving.MonitoringConfig")
    return _MONITORING_PROTO


def parse_monitoring_config_text(text: str, source: str = "<monitoring config>") -> str:
    """``--monitoring_config_file``: the path TF Serving would serve Prometheus metrics on, or "" when
    ``prometheus_config`` is not enabled."""
    from google.protobuf import text_format

    proto = _monitoring_message()()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as exc:
        raise ConfigError(
            f"{source}: not a valid MonitoringConfig text proto. Error parsing text-format "
            f"{proto.DESCRIPTOR.full_name}: {exc}"
        ) from None
    if not proto.prometheus_config.enable:
        return ""
    path: str = proto.prometheus_config.path or PROMETHEUS_PATH
    if not path.startswith("/"):
        raise ConfigError(f"{source}: prometheus_config.path must start with '/', got {path!r}")
    return path


_SSL_PROTO: Any = None


def _ssl_message() -> Any:
    """TF Serving's ``SSLConfig`` (``ssl_config.proto``, not in ``tensorflow-serving-api``), built at run
    time as ``_monitoring_message`` builds its message."""
    global _SSL_PROTO
    if _SSL_PROTO is None:
        from google.protobuf import descriptor_pb2

        field = descriptor_pb2.FieldDescriptorProto
        file = descriptor_pb2.FileDescriptorProto(
            name="tensorflow_serving/config/ssl_config.proto", package="tensorflow.serving", syntax="proto3"
        )
        message = file.message_type.add(name="SSLConfig")
        for number, name in enumerate(("server_key", "server_cert", "custom_ca"), start=1):
            message.field.add(name=name, number=number, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
        message.field.add(name="client_verify", number=4, type=field.TYPE_BOOL, label=field.LABEL_OPTIONAL)
        _SSL_PROTO = _message_class(file, "tensorflow.serving.SSLConfig")
    return _SSL_PROTO


def parse_ssl_config_text(text: str, source: str = "<ssl config>") -> SslConfig:
    """``--ssl_config_file``, checked as far as it can be before serving: the fields TF Serving needs are
    there, hold PEM, the key belongs to the certificate, and client verification has a CA to verify with."""
    from google.protobuf import text_format

    proto = _ssl_message()()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as exc:
        raise ConfigError(f"{source}: not a valid SSLConfig text proto: {exc}") from None
    for name in ("server_key", "server_cert"):
        if not getattr(proto, name).strip():
            raise ConfigError(f"{source}: {name} is empty (it holds the PEM text itself, not a path)")
    if proto.client_verify and not proto.custom_ca.strip():
        raise ConfigError(
            f"{source}: client_verify needs custom_ca, the CA that client certificates are checked against"
        )
    config = SslConfig(proto.server_key, proto.server_cert, proto.custom_ca, proto.client_verify)
    _check_pem(config, source)
    return config


def _check_pem(config: SslConfig, source: str) -> None:
    import ssl
    import tempfile

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory(prefix="modelservice-ssl-check-") as directory:  # 0700
        cert, key = Path(directory, "cert.pem"), Path(directory, "key.pem")
        cert.write_text(config.server_cert)
        key.write_text(config.server_key)
        try:
            context.load_cert_chain(cert, key, password=b"")  # an encrypted key fails, never prompts
        except ssl.SSLError as exc:
            raise ConfigError(
                f"{source}: server_cert and server_key are not a PEM certificate and its unencrypted private "
                f"key ({exc.reason})"
            ) from None
    if config.custom_ca:
        try:
            context.load_verify_locations(cadata=config.custom_ca)
        except (ssl.SSLError, TypeError, ValueError) as exc:  # TypeError: text that is not ASCII
            reason = exc.reason if isinstance(exc, ssl.SSLError) else exc
            raise ConfigError(f"{source}: custom_ca is not PEM certificates ({reason})") from None


def _batching_message() -> Any:
    """TF Serving's ``BatchingParameters`` message, built at run time from its field list.

    The ``tensorflow-serving-api`` package does not ship ``session_bundle_config.proto``; text format only
    needs the names and types, which are TF Serving's (the field numbers never appear in text)."""
    global _BATCHING_PROTO
    if _BATCHING_PROTO is None:
        from google.protobuf import descriptor_pb2, wrappers_pb2

        field = descriptor_pb2.FieldDescriptorProto
        file = descriptor_pb2.FileDescriptorProto(
            name="modelservice/batching_parameters.proto",
            package="modelservice",
            syntax="proto3",
            dependency=["google/protobuf/wrappers.proto"],
        )
        message = file.message_type.add(name="BatchingParameters")
        wrapped = [("max_batch_size", "Int64Value"), ("batch_timeout_micros", "Int64Value"),
                   ("max_enqueued_batches", "Int64Value"), ("num_batch_threads", "Int64Value"),
                   ("thread_pool_name", "StringValue")]  # fmt: skip
        for number, (name, wrapper) in enumerate(wrapped, start=1):
            message.field.add(name=name, number=number, type=field.TYPE_MESSAGE,
                              type_name=f".google.protobuf.{wrapper}", label=field.LABEL_OPTIONAL)  # fmt: skip
        message.field.add(
            name="allowed_batch_sizes", number=6, type=field.TYPE_INT64, label=field.LABEL_REPEATED
        )
        message.field.add(name="pad_variable_length_inputs", number=7, type=field.TYPE_BOOL,
                          label=field.LABEL_OPTIONAL)  # fmt: skip
        _BATCHING_PROTO = _message_class(file, "modelservice.BatchingParameters", wrappers_pb2.DESCRIPTOR)
    return _BATCHING_PROTO


def parse_batching_parameters_text(text: str, source: str = "<batching parameters>") -> dict[str, Any]:
    """The parameters set in TF Serving's ``BatchingParameters`` text proto (unset ones are left out)."""
    from google.protobuf import text_format

    proto = _batching_message()()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as exc:
        raise ConfigError(f"{source}: not a valid BatchingParameters text proto: {exc}") from None
    values: dict[str, Any] = {}
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"):
        if proto.HasField(name):
            values[name] = getattr(proto, name).value
    if proto.allowed_batch_sizes:
        values["allowed_batch_sizes"] = tuple(proto.allowed_batch_sizes)
    if proto.pad_variable_length_inputs:
        values["pad_variable_length_inputs"] = True
    return values


def batching_from_args(args: argparse.Namespace) -> BatchingParameters | None:
    """``--enable_batching`` with the file's values, our flags overriding them; TF Serving's defaults."""
    if not args.enable_batching:
        if args.batching_parameters_file:
            raise ConfigError("--batching_parameters_file needs batching (--enable_batching=false was given)")
        return None
    values: dict[str, Any] = {"num_batch_threads": _cpu_count()}
    if args.batching_parameters_file:
        try:
            text = Path(args.batching_parameters_file).read_text()
        except OSError as exc:
            raise ConfigError(
                f"--batching_parameters_file={args.batching_parameters_file}: {exc.strerror}"
            ) from None
        values.update(parse_batching_parameters_text(text, source=args.batching_parameters_file))
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.allowed_batch_sizes is not None:
        try:
            values["allowed_batch_sizes"] = tuple(
                int(v) for v in args.allowed_batch_sizes.split(",") if v.strip()
            )
        except ValueError:
            raise ConfigError(
                f"--allowed_batch_sizes={args.allowed_batch_sizes!r}: expected comma-separated integers"
            ) from None
    if args.pad_variable_length_inputs is not None:
        values["pad_variable_length_inputs"] = args.pad_variable_length_inputs
    try:
        return BatchingParameters(**values)
    except BatchingConfigError as exc:
        source = args.batching_parameters_file or "batching flags"
        raise ConfigError(f"{source}: {exc}") from None


def parse_version_policy(text: str) -> VersionPolicy:
    """``--model_version_policy``: ``latest:N``, ``all`` or ``specific:V1,V2`` (ours; TF Serving only has
    the config file for this)."""
    kind, _, argument = text.strip().partition(":")
    try:
        if kind == "all" and not argument:
            return VersionPolicy(kind="all")
        if kind == "latest":
            count = int(argument or "1")
            if count >= 1:
                return VersionPolicy(num_versions=count)
        if kind == "specific":
            versions = tuple(sorted({int(v) for v in argument.split(",") if v.strip()}))
            if versions and min(versions) >= 0:
                return VersionPolicy(kind="specific", versions=versions)
    except ValueError:
        pass
    raise ConfigError(
        f"--model_version_policy={text!r}: expected latest:N (N >= 1), all, or specific:V1,V2,..."
    )


def load_model_config_file(path: str) -> tuple[ModelConfig, ...]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"--model_config_file={path}: {exc.strerror}") from None
    return parse_model_config_text(text, source=path)


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelservice-runtime",
        description="Serve TensorFlow SavedModels over TensorFlow Serving's REST API.",
        allow_abbrev=False,
    )
    tfs = parser.add_argument_group("TensorFlow Serving flags")
    tfs.add_argument("--model_name", help="served model name (env MODEL_NAME, default 'model')")
    tfs.add_argument(
        "--model_base_path",
        help="directory with numbered version subdirectories (default $MODEL_BASE_PATH/$MODEL_NAME)",
    )
    tfs.add_argument("--model_version_policy", default="latest:1",
                     help="latest:N | all | specific:V1,V2 (for --model_name; the config file has its own)")  # fmt: skip
    tfs.add_argument("--model_config_file", default="", help="text-proto model_config_list file")
    tfs.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0.0,
                     help="re-read the model config file this often; 0 reads it once")  # fmt: skip
    tfs.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                     help="look for new model versions this often; 0 looks once")  # fmt: skip
    tfs.add_argument("--rest_api_port", type=int, default=8501)
    tfs.add_argument("--rest_api_timeout_in_ms", type=int, default=30000,
                     help="deadline for one request; 0 disables it")  # fmt: skip
    tfs.add_argument("--rest_api_num_threads", type=int, default=0, help="same as --threads")
    tfs.add_argument("--port", type=int, default=8500,
                     help="gRPC port (TF Serving's PredictionService and ModelService, gRPC health); 0 turns "
                     "gRPC off")  # fmt: skip
    tfs.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0)
    tfs.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                     help="TF's inter-op threads in the model process: N > 0 a pool of N, < 0 every op in "
                     "the thread running the model; 0 picks: -1 on CPU, min(2, cores) on a GPU")  # fmt: skip
    tfs.add_argument("--enable_model_warmup", type=_bool, nargs="?", const=True, default=True)
    tfs.add_argument("--enable_signature_method_name_check", type=_bool, nargs="?", const=True, default=False,
                     help="classify and regress only on signatures whose method_name says so (default off, "
                     "as in TF Serving: any signature shaped like one, e.g. a TF2 SavedModel's)")  # fmt: skip
    tfs.add_argument("--monitoring_config_file", default="",
                     help="TF Serving's MonitoringConfig text proto: prometheus_config { enable: true path: "
                     "'/...' } also serves the metrics on that path")  # fmt: skip
    tfs.add_argument("--per_process_gpu_memory_fraction", type=float, default=0.0,
                     help="fraction of each GPU's memory the model process reserves; 0 (default) lets "
                     "it grow as needed instead of reserving nearly all of it up front")  # fmt: skip
    tfs.add_argument("--enable_batching", type=_bool, nargs="?", const=True, default=True,
                     help="batch concurrent predict/infer requests per model version and signature "
                     "(default on, unlike TF Serving: with batch_timeout_micros 0 a lone request runs "
                     "at once; --enable_batching=false turns it off)")  # fmt: skip
    tfs.add_argument("--batching_parameters_file", default="",
                     help="TF Serving's BatchingParameters text proto (max_batch_size { value: 32 } ...)")  # fmt: skip
    tfs.add_argument("--ssl_config_file", default="",
                     help="TF Serving's SSLConfig text proto (server_key, server_cert, custom_ca, client_verify: "
                     "PEM text) for the gRPC port; with --tls_cert_file too, that one is REST's")  # fmt: skip
    batching = parser.add_argument_group(
        "Batching flags (ours; each overrides the same field of --batching_parameters_file)"
    )
    batching.add_argument("--max_batch_size", type=int, help="rows per model call (default 1000)")
    batching.add_argument("--batch_timeout_micros", type=int,
                          help="longest wait for a batch to fill (default 0: run what is queued)")  # fmt: skip
    batching.add_argument("--max_enqueued_batches", type=int,
                          help="queue bound in batches; more answers 503 (default 10)")  # fmt: skip
    batching.add_argument("--num_batch_threads", type=int, help="batches run at once (default: cores)")
    batching.add_argument("--allowed_batch_sizes", help="comma-separated; pad batches up to these sizes")
    batching.add_argument("--pad_variable_length_inputs", type=_bool, nargs="?", const=True, default=None)
    ours = parser.add_argument_group("ModelService runtime flags")
    ours.add_argument("--rest_api_host", default="0.0.0.0", help="address to bind")
    ours.add_argument("--workers", type=int, default=int(os.environ.get("MS_WORKERS", "0")),
                      help="Gunicorn worker processes for HTTP and JSON (default: the cores the pod may "
                      "use); they share the pod's one model process")  # fmt: skip
    ours.add_argument("--threads", type=int, default=int(os.environ.get("MS_THREADS", "16")),
                      help="requests per worker at once (in the model process); more wait for a slot")  # fmt: skip
    ours.add_argument("--worker_timeout_seconds", type=int, default=60)
    ours.add_argument("--graceful_timeout_seconds", type=int, default=30)
    ours.add_argument("--client_timeout_seconds", type=float, default=60.0,
                      help="while a request is served, how long its connection may go without a byte of the "
                      "body arriving (then 408) or of the answer leaving (then it is closed); 0: no limit")  # fmt: skip
    ours.add_argument("--max_request_bytes", type=int, default=64 * 1024 * 1024,
                      help="larger request bodies get 413")  # fmt: skip
    ours.add_argument("--max_queue_delay_ms", type=int, default=0,
                      help="overload target: while the wait to be served stays above this, "
                      "requests that waited longer get 503 (default: a tenth of "
                      "--rest_api_timeout_in_ms, at most 100)")  # fmt: skip
    ours.add_argument("--model_processes", type=int, default=0,
                      help="model processes per pod, each with its own copy of the models (default: one per "
                      "GPU the device plugin listed in NVIDIA_VISIBLE_DEVICES, else one)")  # fmt: skip
    ours.add_argument("--tensorflow_gpu_device", default="",
                      help="GPU(s) the model process uses, as indices among the visible ones "
                      "(e.g. '0' or '0,1'; default: all visible)")  # fmt: skip
    ours.add_argument("--drain_seconds", type=float, default=5.0,
                      help="on SIGTERM, report not ready and keep serving this long before stopping")  # fmt: skip
    ours.add_argument("--api_keys_dir", default="",
                      help="require an API key (Authorization: Bearer <key>) on every model API, REST and "
                           "gRPC: a directory with one file per key, its name the key's name (a mounted "
                           "Secret); re-read when it changes")  # fmt: skip
    ours.add_argument("--tls_cert_file", default="",
                      help="serve REST and gRPC over TLS with this PEM certificate (chain); re-read when it "
                           "changes (a mounted kubernetes.io/tls Secret's tls.crt)")  # fmt: skip
    ours.add_argument("--tls_key_file", default="", help="the PEM private key of --tls_cert_file (tls.key)")
    ours.add_argument("--kubernetes_auth", default="", metavar="NAMESPACE/NAME",
                      help="accept service-account tokens (Authorization: Bearer <token>): TokenReview, then "
                           "SubjectAccessReview of create/get on modelservices/predict NAME in NAMESPACE")  # fmt: skip
    ours.add_argument(
        "--auth_metrics",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="with --api_keys_dir, protect /metrics too (probes always stay open)",
    )
    ours.add_argument("--rate_limit_requests_per_second", type=float, default=0.0,
                      help="per client (API key name, or '-' for anonymous) and model, for the whole pod: "
                           "429 with Retry-After and RateLimit-* headers beyond it (0: no limit)")  # fmt: skip
    ours.add_argument(
        "--rate_limit_burst",
        type=int,
        default=0,
        help="requests a client may send at once (default: the rate, rounded up)",
    )
    ours.add_argument("--response_cache_bytes", type=int, default=0,
                      help="cache predict responses of deterministic models for the whole pod, up to this "
                           "many bytes (LRU; keyed by model, serving version, signature and the canonical "
                           "request); 0: off")  # fmt: skip
    ours.add_argument(
        "--response_cache_ttl_seconds",
        type=float,
        default=0.0,
        help="with --response_cache_bytes: entries expire after this long (0: never)",
    )
    ours.add_argument("--log_format", choices=("json", "text"), default="json")
    ours.add_argument("--log_level", default="info")
    return parser


def config_from_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> RuntimeConfig:
    """Flags override the environment; a config file and --model_name are mutually exclusive."""
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    if args.model_config_file and (args.model_name or args.model_base_path):
        raise ConfigError("--model_config_file cannot be combined with --model_name/--model_base_path")
    if args.model_config_file:
        models = load_model_config_file(args.model_config_file)
    else:
        name = args.model_name or env.get("MODEL_NAME") or "model"
        base = args.model_base_path or os.path.join(env.get("MODEL_BASE_PATH", "/models"), name)
        models = (
            ModelConfig(name=name, base_path=base, policy=parse_version_policy(args.model_version_policy)),
        )
    for flag in ("threads", "rest_api_port", "max_request_bytes"):
        if getattr(args, flag) <= 0:
            raise ConfigError(f"--{flag} must be positive, got {getattr(args, flag)}")
    if args.workers == 0:
        args.workers = _cpu_count()
    if args.model_processes < 0:
        raise ConfigError(f"--model_processes must not be negative, got {args.model_processes}")
    model_processes = args.model_processes or max(1, len(visible_gpus(env)))
    if not 0.0 <= args.per_process_gpu_memory_fraction <= 1.0:
        raise ConfigError(
            f"--per_process_gpu_memory_fraction must be between 0 and 1, got {args.per_process_gpu_memory_fraction}"
        )
    if args.tensorflow_gpu_device and not all(
        part.strip().isascii() and part.strip().isdigit() for part in args.tensorflow_gpu_device.split(",")
    ):
        raise ConfigError(
            f"--tensorflow_gpu_device must be GPU indices like '0' or '0,1', got {args.tensorflow_gpu_device!r}"
        )
    if args.rate_limit_requests_per_second < 0 or args.rate_limit_burst < 0:
        raise ConfigError("--rate_limit_requests_per_second and --rate_limit_burst must not be negative")
    if args.response_cache_bytes < 0 or args.response_cache_ttl_seconds < 0:
        raise ConfigError("--response_cache_bytes and --response_cache_ttl_seconds must not be negative")
    if args.kubernetes_auth and not re.fullmatch(r"[a-z0-9][-a-z0-9.]*/[^/\s]+", args.kubernetes_auth):
        raise ConfigError(f"--kubernetes_auth must be <namespace>/<name>, got {args.kubernetes_auth!r}")
    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        raise ConfigError("--tls_cert_file and --tls_key_file go together")
    for flag in ("tls_cert_file", "tls_key_file"):
        if getattr(args, flag) and not os.path.isfile(getattr(args, flag)):
            raise ConfigError(f"--{flag}={getattr(args, flag)} is not a file")
    if args.api_keys_dir and not os.path.isdir(args.api_keys_dir):
        raise ConfigError(f"--api_keys_dir={args.api_keys_dir} is not a directory")
    ssl_config = None
    if args.ssl_config_file:
        try:
            text = Path(args.ssl_config_file).read_text()
        except OSError as exc:
            raise ConfigError(f"--ssl_config_file={args.ssl_config_file}: {exc.strerror}") from None
        ssl_config = parse_ssl_config_text(text, source=args.ssl_config_file)
    prometheus_path = ""
    if args.monitoring_config_file:
        try:
            text = Path(args.monitoring_config_file).read_text()
        except OSError as exc:
            raise ConfigError(
                f"--monitoring_config_file={args.monitoring_config_file}: {exc.strerror}"
            ) from None
        prometheus_path = parse_monitoring_config_text(text, source=args.monitoring_config_file)
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be a TCP port or 0 (no gRPC), got {args.port}")
    for flag in ("workers", "max_queue_delay_ms", "drain_seconds", "client_timeout_seconds"):
        if getattr(args, flag) < 0:
            raise ConfigError(f"--{flag} must not be negative, got {getattr(args, flag)}")
    for flag in ("drain_seconds", "client_timeout_seconds"):
        if not math.isfinite(getattr(args, flag)):
            raise ConfigError(f"--{flag} must be a number of seconds, got {getattr(args, flag)}")
    if args.drain_seconds >= args.graceful_timeout_seconds > 0:
        raise ConfigError(
            f"--drain_seconds ({args.drain_seconds}) must be shorter than --graceful_timeout_seconds "
            f"({args.graceful_timeout_seconds}), or in-flight requests are cut off"
        )
    return RuntimeConfig(
        models=models,
        model_config_file=args.model_config_file,
        model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        rest_api_host=args.rest_api_host,
        rest_api_port=args.rest_api_port,
        rest_api_timeout_in_ms=args.rest_api_timeout_in_ms,
        workers=args.workers,
        threads=args.rest_api_num_threads or args.threads,
        worker_timeout_seconds=args.worker_timeout_seconds,
        graceful_timeout_seconds=args.graceful_timeout_seconds,
        client_timeout_seconds=args.client_timeout_seconds,
        tensorflow_intra_op_parallelism=args.tensorflow_intra_op_parallelism,
        tensorflow_inter_op_parallelism=args.tensorflow_inter_op_parallelism,
        enable_model_warmup=args.enable_model_warmup,
        max_request_bytes=args.max_request_bytes,
        batching=batching_from_args(args),
        max_queue_delay_ms=args.max_queue_delay_ms,
        model_processes=model_processes,
        grpc_port=args.port,
        per_process_gpu_memory_fraction=args.per_process_gpu_memory_fraction,
        tensorflow_gpu_device=args.tensorflow_gpu_device,
        drain_seconds=args.drain_seconds,
        log_format=args.log_format,
        log_level=args.log_level,
        enable_signature_method_name_check=args.enable_signature_method_name_check,
        monitoring_config_file=args.monitoring_config_file,
        prometheus_path=prometheus_path,
        api_keys_dir=args.api_keys_dir,
        auth_metrics=args.auth_metrics,
        kubernetes_auth=args.kubernetes_auth,
        tls_cert_file=args.tls_cert_file,
        tls_key_file=args.tls_key_file,
        ssl_config=ssl_config,
        rate_limit_requests_per_second=args.rate_limit_requests_per_second,
        rate_limit_burst=args.rate_limit_burst,
        response_cache_bytes=args.response_cache_bytes,
        response_cache_ttl_seconds=args.response_cache_ttl_seconds,
    )
