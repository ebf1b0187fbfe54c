"""TF Serving's flags, environment and model config file."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from modelservice_runtime.config import (
    ConfigError,
    SslConfig,
    VersionPolicy,
    _cpu_count,
    config_from_args,
    parse_model_config_text,
)
from tests.tlsutil import CertificateAuthority


def test_environment_gives_model_base_path_slash_model_name_like_the_tf_serving_image() -> None:
    config = config_from_args([], environ={"MODEL_NAME": "iris", "MODEL_BASE_PATH": "/srv"})
    assert [(m.name, m.base_path) for m in config.models] == [("iris", "/srv/iris")]
    assert config.rest_api_port == 8501


def test_flags_override_environment_in_both_flag_styles() -> None:
    config = config_from_args(
        ["--model_name=a", "--model_base_path", "/m/a", "--rest_api_port=9000", "--port=8500"],
        environ={"MODEL_NAME": "ignored"},
    )
    assert (config.models[0].name, config.models[0].base_path, config.rest_api_port) == ("a", "/m/a", 9000)


def test_model_config_file_is_parsed_with_the_serving_protos(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    path.write_text(
        'model_config_list { config { name: "a" base_path: "/m/a" model_platform: "tensorflow" '
        "model_version_policy { specific { versions: 1 versions: 3 } } "
        'version_labels { key: "stable" value: 1 } } '
        'config { name: "b" base_path: "/m/b" model_version_policy { latest { num_versions: 2 } } } '
        'config { name: "c" base_path: "/m/c" model_version_policy { all {} } } }'
    )
    models = config_from_args([f"--model_config_file={path}"]).models
    assert models[0].policy == VersionPolicy(kind="specific", versions=(1, 3))
    assert dict(models[0].labels) == {"stable": 1}
    assert models[1].policy == VersionPolicy(num_versions=2)
    assert models[2].policy.kind == "all"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model_config_list { config { name: 'a' } }", "needs a 'base_path'"),
        ("model_config_list { bogus: 1 }", "not a valid model_config_list"),
        ("model_config_list { config { name: 'a' base_path: '/a' } config { name: 'a' base_path: '/b' } }",
         "appears twice"),
        ("model_config_list { config { name: 'a' base_path: '/a' model_platform: 'pytorch' } }",
         "only 'tensorflow' is served"),
    ],
)  # fmt: skip
def test_bad_model_config_files_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_model_config_text(text)


def test_config_file_and_model_name_are_mutually_exclusive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be combined"):
        config_from_args(["--model_config_file=/x", "--model_name=a"])


@pytest.mark.parametrize(
    ("policy", "on_disk", "served"),
    [
        (VersionPolicy(), [1, 2, 3], {3}),
        (VersionPolicy(num_versions=2), [1, 5, 3], {3, 5}),
        (VersionPolicy(kind="all"), [1, 2], {1, 2}),
        (VersionPolicy(kind="specific", versions=(2, 9)), [1, 2, 3], {2}),
        (VersionPolicy(), [], set()),
    ],
)
def test_version_policy_selects_versions_like_tf_serving(
    policy: VersionPolicy, on_disk: list[int], served: set[int]
) -> None:
    assert policy.select(on_disk) == served


def test_the_model_process_gets_every_core_for_tensorflow_whatever_the_worker_count() -> None:
    assert config_from_args(["--workers=64"]).intra_op_threads() == _cpu_count()
    assert config_from_args(["--tensorflow_intra_op_parallelism=3"]).intra_op_threads() == 3


def test_workers_default_to_the_cores_the_pod_may_use(tmp_path: Path) -> None:
    assert config_from_args([]).workers == _cpu_count()
    assert config_from_args(["--workers=3"]).workers == 3
    affinity = len(os.sched_getaffinity(0))
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("100000 100000\n")  # a limit of one core
    assert _cpu_count({}, v2) == 1
    (v2 / "cpu.max").write_text("max 100000\n")
    assert _cpu_count({}, v2) == affinity
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("150000\n")  # 1.5 cores: one whole core
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert _cpu_count({}, tmp_path / "v1") == 1
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert _cpu_count({}, tmp_path / "v1") == affinity
    # The CPU request the operator passes down caps it too (a pod without a limit on a big node).
    assert _cpu_count({"MODELSERVICE_CPU_REQUEST": "1"}, tmp_path / "v1") == 1
    assert _cpu_count({"MODELSERVICE_CPU_REQUEST": "bogus"}, tmp_path / "v1") == affinity


def test_one_model_process_per_gpu_the_device_plugin_listed() -> None:
    assert config_from_args([], environ={}).model_processes == 1
    assert config_from_args([], environ={"NVIDIA_VISIBLE_DEVICES": "GPU-1a2b,GPU-3c4d"}).model_processes == 2
    for unlisted in ("all", "none", "void", ""):
        assert config_from_args([], environ={"NVIDIA_VISIBLE_DEVICES": unlisted}).model_processes == 1
    assert (
        config_from_args(["--model_processes=3"], environ={"NVIDIA_VISIBLE_DEVICES": "0"}).model_processes
        == 3
    )


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--per_process_gpu_memory_fraction=1.5", "between 0 and 1"),
        ("--tensorflow_gpu_device=gpu0", "GPU indices"),
        ("--tensorflow_gpu_device=0,\u00b9", "GPU indices"),  # a digit to str.isdigit(), not to int()
        ("--max_queue_delay_ms=-1", "must not be negative"),
        ("--workers=-1", "must not be negative"),
        ("--model_processes=-1", "must not be negative"),
        ("--port=70000", "TCP port"),
    ],
)
def test_bad_process_and_gpu_flags_are_config_errors(flag: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_args([flag])


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("latest:2", VersionPolicy(num_versions=2)),
        ("all", VersionPolicy(kind="all")),
        ("specific:3,1", VersionPolicy(kind="specific", versions=(1, 3))),
    ],
)
def test_model_version_policy_flag_covers_what_the_config_file_can_say(
    text: str, policy: VersionPolicy
) -> None:
    assert config_from_args([f"--model_version_policy={text}"]).models[0].policy == policy


@pytest.mark.parametrize("text", ["latest:0", "newest", "specific:", "specific:a"])
def test_bad_model_version_policy_flag_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="--model_version_policy"):
        config_from_args([f"--model_version_policy={text}"])


def test_canonical_codes_follow_tensorflows_enum_numbers() -> None:
    from modelservice_runtime.errors import CANONICAL_CODES, HTTP_STATUS_BY_CODE, code_number

    assert set(CANONICAL_CODES) == set(HTTP_STATUS_BY_CODE)
    assert (code_number("OK"), code_number("NOT_FOUND"), code_number("UNAUTHENTICATED")) == (0, 5, 16)
    assert code_number("NO_SUCH_CODE") == 2


# ---------------------------------------------------------------------------------------------- batching

BATCHING_FILE = """
max_batch_size { value: 32 }
batch_timeout_micros { value: 2000 }
max_enqueued_batches { value: 4 }
num_batch_threads { value: 2 }
allowed_batch_sizes: 8
allowed_batch_sizes: 32
pad_variable_length_inputs: true
"""


def test_batching_is_on_by_default_with_tf_servings_parameters_and_can_be_turned_off() -> None:
    batching = config_from_args(["--model_name=m"]).batching
    assert batching is not None and batching.batch_timeout_micros == 0 and batching.max_batch_size == 1000
    assert config_from_args(["--model_name=m", "--enable_batching=false"]).batching is None


def test_batching_parameters_file_is_tf_servings_text_proto(tmp_path: Path) -> None:
    path = tmp_path / "batching.config"
    path.write_text(BATCHING_FILE)
    batching = config_from_args(["--enable_batching", f"--batching_parameters_file={path}"]).batching
    assert batching is not None
    assert (batching.max_batch_size, batching.batch_timeout_micros, batching.max_enqueued_batches) == (
        32,
        2000,
        4,
    )
    assert batching.num_batch_threads == 2 and batching.allowed_batch_sizes == (8, 32)
    assert batching.pad_variable_length_inputs


def test_batching_flags_override_the_file_and_defaults_are_tf_servings(tmp_path: Path) -> None:
    path = tmp_path / "batching.config"
    path.write_text("max_batch_size { value: 32 }\n")
    batching = config_from_args(
        ["--enable_batching", f"--batching_parameters_file={path}", "--max_batch_size=64"]
    ).batching
    assert batching is not None and batching.max_batch_size == 64
    assert (batching.batch_timeout_micros, batching.max_enqueued_batches) == (0, 10)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_batch_sizes { value: 3 }", 'has no field named "max_batch_sizes"'),
        ("max_batch_size { value: 16 }\nallowed_batch_sizes: 8", "last entry was 8; expected 16"),
        ("max_batch_size { value: 0 }", "max_batch_size must be positive"),
    ],
)
def test_bad_batching_files_name_the_file_and_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "batching.config"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as raised:
        config_from_args(["--enable_batching", f"--batching_parameters_file={path}"])
    assert str(path) in str(raised.value)


def test_a_batching_file_with_batching_turned_off_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs batching"):
        config_from_args([f"--batching_parameters_file={tmp_path / 'b'}", "--enable_batching=false"])


def test_drain_must_end_before_the_graceful_timeout() -> None:
    with pytest.raises(ConfigError, match="--drain_seconds"):
        config_from_args(["--drain_seconds=30", "--graceful_timeout_seconds=30"])


def test_the_client_timeout_defaults_to_a_minute_and_zero_turns_it_off() -> None:
    assert config_from_args([]).client_timeout_seconds == 60.0
    assert config_from_args(["--client_timeout_seconds=0"]).client_timeout_seconds == 0.0
    assert config_from_args(["--client_timeout_seconds=2.5"]).client_timeout_seconds == 2.5


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--client_timeout_seconds=-1", "--client_timeout_seconds must not be negative, got -1.0"),
        ("--client_timeout_seconds=nan", "--client_timeout_seconds must be a number of seconds, got nan"),
        ("--client_timeout_seconds=inf", "--client_timeout_seconds must be a number of seconds, got inf"),
        ("--drain_seconds=nan", "--drain_seconds must be a number of seconds, got nan"),
    ],
)
def test_timeouts_that_are_not_a_number_of_seconds_are_refused(flag: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_args([flag])


def _ssl_text(key: str, cert: str, ca: str = "", client_verify: bool = False) -> str:
    def quoted(pem: str) -> str:
        return '"' + pem.replace("\n", "\\n") + '"'

    text = f"server_key: {quoted(key)}\nserver_cert: {quoted(cert)}\n"
    if ca:
        text += f"custom_ca: {quoted(ca)}\n"
    return text + ("client_verify: true\n" if client_verify else "")


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(directory)
    ca.issue(directory / "tls.crt", directory / "tls.key")
    other = CertificateAuthority(directory, "other CA")
    other.issue(directory / "other.crt", directory / "other.key")
    found = {name: (directory / file).read_text() for name, file in (
        ("cert", "tls.crt"), ("key", "tls.key"), ("ca", ca.path.name), ("other_key", "other.key"))}  # fmt: skip
    key = serialization.load_pem_private_key(found["key"].encode(), None)
    found["encrypted_key"] = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    ).decode()
    return found


def test_ssl_config_file_is_tf_servings_text_proto_with_the_pem_text_inline(
    tmp_path: Path, pems: dict[str, str]
) -> None:
    path = tmp_path / "ssl.config"
    path.write_text(_ssl_text(pems["key"], pems["cert"], pems["ca"], client_verify=True))
    config = config_from_args(["--model_name=m", "--model_base_path=/m", f"--ssl_config_file={path}"])
    assert config.ssl_config == SslConfig(pems["key"], pems["cert"], pems["ca"], client_verify=True)
    assert config.tls_cert_file == ""  # REST stays plain HTTP, as in TF Serving
    assert "PRIVATE KEY" not in repr(config)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"key": ""}, "server_key is empty (it holds the PEM text itself, not a path)"),
        (
            {"key": "/etc/tls/tls.key"},
            "server_cert and server_key are not a PEM certificate and its unencrypted private key",
        ),
        (
            {"key": "other_key"},
            "server_cert and server_key are not a PEM certificate and its unencrypted private key",
        ),
        (
            {"key": "encrypted_key"},  # gRPC cannot use it either; OpenSSL must not prompt for a password
            "server_cert and server_key are not a PEM certificate and its unencrypted private key",
        ),
        ({"client_verify": True}, "client_verify needs custom_ca"),
        ({"ca": "not a certificate"}, "custom_ca is not PEM certificates"),
        (
            {"ca": "-----BEGIN CERTIFICATE-----\nñ\n-----END CERTIFICATE-----\n"},
            "custom_ca is not PEM certificates",
        ),
    ],
)
def test_bad_ssl_config_files_say_what_is_wrong_before_anything_serves(
    tmp_path: Path, pems: dict[str, str], fields: dict[str, object], message: str
) -> None:
    key = str(fields.get("key", "key"))
    ca = str(fields.get("ca", ""))
    path = tmp_path / "ssl.config"
    path.write_text(_ssl_text(pems.get(key, key), pems["cert"], ca, bool(fields.get("client_verify"))))
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {message}")):
        config_from_args(["--model_name=m", "--model_base_path=/m", f"--ssl_config_file={path}"])


def test_an_ssl_config_file_that_is_not_a_text_proto_or_not_there_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "ssl.config"
    path.write_text("server_key { }")
    with pytest.raises(ConfigError, match="not a valid SSLConfig text proto"):
        config_from_args(["--model_name=m", "--model_base_path=/m", f"--ssl_config_file={path}"])
    with pytest.raises(ConfigError, match="No such file or directory"):
        config_from_args(
            ["--model_name=m", "--model_base_path=/m", f"--ssl_config_file={tmp_path / 'missing'}"]
        )
