#!/usr/bin/env bash
# The runtime demo: build the iris example (two versions), serve it with modelservice-runtime under
# Gunicorn, and call it the way TF Serving clients do.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=examples/models/out
PORT=${PORT:-8501}
if [ ! -d "$OUT/iris/2" ]; then
  echo "==> Training the iris example model (scikit-learn's bundled data -> Keras -> SavedModel)"
  .venv/bin/python examples/models/iris.py --out "$OUT"
fi
cat >"$OUT/models.config" <<CONFIG
model_config_list {
  config {
    name: "iris"
    base_path: "$PWD/$OUT/iris"
    model_platform: "tensorflow"
    model_version_policy { all {} }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
}
CONFIG
echo "==> Starting modelservice-runtime on port $PORT with $OUT/models.config (both versions, two labels)"
TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/modelservice-runtime --model_config_file="$OUT/models.config" \
  --rest_api_port="$PORT" --rest_api_host=127.0.0.1 --log_format=text >"$OUT/runtime.log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do
  if curl -fsS "http://127.0.0.1:$PORT/v2/health/ready" >/dev/null 2>&1; then break; fi
  if ! kill -0 $server 2>/dev/null; then cat "$OUT/runtime.log"; exit 1; fi
  sleep 0.5
done
set -x
curl -sS "http://127.0.0.1:$PORT/v1/models/iris"
curl -sS -d '{"instances": [[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [6.3, 3.3, 6.0, 2.5]]}' \
  "http://127.0.0.1:$PORT/v1/models/iris:predict"
curl -sS -d '{"inputs": {"features": [[5.9, 3.0, 5.1, 1.8]]}}' "http://127.0.0.1:$PORT/v1/models/iris/labels/stable:predict"
set +x
echo
echo "==> Served. Classes: 0 setosa, 1 versicolor, 2 virginica. Log: $OUT/runtime.log"
