#!/usr/bin/env bash
# What `make bench` needs beyond .venv: wrk (the load generator; Debian package) and .venv-kserve, KServe's
# Python ModelServer with TensorFlow in a venv of its own (kserve pins a protobuf that
# tensorflow-serving-api does not accept). Idempotent; fast when both are there.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing wrk" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  else
    echo "wrk is missing: install it (apt-get install wrk) and run make bench again" >&2
    exit 1
  fi
fi
stamp=.venv-kserve/.requirements.sha
want=$(sha256sum requirements/bench-kserve.txt | cut -d' ' -f1)
if [ -x .venv-kserve/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "Setting up .venv-kserve (KServe $(grep '^kserve==' requirements/bench-kserve.txt | cut -d= -f3))" >&2
uv venv --quiet --allow-existing --python "${PYTHON:-python3}" .venv-kserve
uv pip install --quiet --python .venv-kserve/bin/python -r requirements/bench-kserve.txt
echo "$want" > "$stamp"
