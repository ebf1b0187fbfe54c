"""What one model call costs the model process, by batch size, TensorFlow's intra-op threads and oneDNN.

    .venv/bin/python -m bench.model_call                                  (small model; about a minute)
    .venv/bin/python -m bench.model_call --model large --batch 1,64 --calls 30
    .venv/bin/python -m bench.model_call --threads 0 --onednn on,off --batch 1,5,10

The model process runs a signature as TF Serving does (``loader.LoadedModel``: a session callable). This
times that call alone, with ``--tensorflow_intra_op_parallelism`` at each of ``--threads`` (0: the
runtime's default, every core the pod may use) and TensorFlow's oneDNN kernels on or off
(``TF_ENABLE_ONEDNN_OPTS``; on Linux TensorFlow turns them on by default on CPUs with VNNI, BF16 or
AMX) for each of ``--onednn``, each setting in a fresh process since TensorFlow reads both once per
process: wall time and process CPU per call, the best of ``--runs`` runs of ``--calls`` calls. It shows
when splitting a model's ops over threads pays (big matrix products) and when it costs more than it
saves (small ones), and which kernels suit the model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.serving_bench import build_model

MODELS = {"small": (32, 256, 2), "large": (128, 4096, 3)}  # features, hidden, layers: as make bench


def measure(
    model_dir: str, threads: int, batches: list[int], calls: int, runs: int
) -> dict[int, list[float]]:
    """In this process: [wall us, CPU us] per call at each batch size (the run with the least wall)."""
    import numpy as np

    from modelservice_runtime import loader
    from modelservice_runtime.config import RuntimeConfig

    config = RuntimeConfig(tensorflow_intra_op_parallelism=threads)
    loader.configure_runtime(config.intra_op_threads(), config.inter_op_threads())
    model = loader.LoadedModel("bench", 1, model_dir)
    (name, spec), = model.input_specs("serving_default").items()  # fmt: skip
    assert spec.shape is not None and len(spec.shape) == 2, f"a model of one 2-D input, not {spec.shape}"
    out: dict[int, list[float]] = {}
    for rows in batches:
        inputs = {name: np.random.default_rng(0).random((rows, spec.shape[1]), dtype=np.float32)}
        for _ in range(min(calls, 50)):
            model.predict("serving_default", inputs)
        best: list[float] = []
        for _ in range(runs):
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                model.predict("serving_default", inputs)
            run = [(time.perf_counter() - wall) / calls * 1e6, (time.process_time() - cpu) / calls * 1e6]
            best = run if not best or run[0] < best[0] else best
        out[rows] = best
    return out


def onednn_enabled() -> bool | None:
    """Whether this process's TensorFlow runs oneDNN kernels (None: this TensorFlow does not say)."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=sorted(MODELS), default="small")
    parser.add_argument("--batch", default="1,10", help="batch sizes (rows per call), comma-separated")
    parser.add_argument("--threads", default="0,1", help="intra-op threads to compare; 0 is the default")
    parser.add_argument("--onednn", default="on", help="oneDNN kernels to compare: on, off or on,off")
    parser.add_argument("--calls", type=int, default=1000, help="calls per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--child", metavar="MODEL_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batch.split(",")]
    onednn = args.onednn.split(",")
    if not set(onednn) <= {"on", "off"}:
        parser.error(f"--onednn: on, off or on,off, not {args.onednn}")
    if args.child:
        result = measure(args.child, int(args.threads), batches, args.calls, args.runs)
        print(json.dumps({"onednn": onednn_enabled(), "calls": result}))
        return
    features, hidden, layers = MODELS[args.model]
    with tempfile.TemporaryDirectory(prefix="modelservice-call-") as work:
        model_dir = build_model(Path(work), features, hidden, layers, name=args.model)
        print(f"one call of the {args.model} model in the model process (best of {args.runs} runs of "
              f"{args.calls} calls)")  # fmt: skip
        for threads in [int(t) for t in args.threads.split(",")]:
            for kernels in onednn:
                env = dict(
                    os.environ,
                    TF_CPP_MIN_LOG_LEVEL="3",
                    TF_ENABLE_ONEDNN_OPTS="1" if kernels == "on" else "0",
                )
                command = [sys.executable, "-m", "bench.model_call", "--child", str(model_dir), "--threads",
                           str(threads), "--batch", args.batch, "--calls", str(args.calls), "--runs", str(args.runs)]  # fmt: skip
                done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
                child = json.loads(done.stdout.strip().splitlines()[-1])
                if child["onednn"] not in (None, kernels == "on"):
                    raise SystemExit(f"TensorFlow ignored TF_ENABLE_ONEDNN_OPTS: oneDNN is not {kernels}")
                result = child["calls"]
                label = "default (every core)" if threads == 0 else f"{threads} thread(s)"
                for rows in batches:
                    wall, cpu = result[str(rows)]
                    print(f"  intra-op {label:>20}  oneDNN {kernels:<3}  batch {rows:>4}: "
                          f"wall {wall:9.0f} us  CPU {cpu:9.0f} us")  # fmt: skip


if __name__ == "__main__":
    main()
