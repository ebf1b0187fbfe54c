#!/usr/bin/env bash
# Create .venv with the pinned development dependencies and the project packages (idempotent, fast when
# nothing changed). Needs only python3 >= 3.11 and pip; installs uv if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! command -v uv >/dev/null 2>&1; then
  echo "Installing uv" >&2
  "$PYTHON" -m pip install --quiet uv
fi
UV=$(command -v uv || echo "$PYTHON -m uv")
stamp=.venv/.requirements.sha
want=$(cat requirements/dev.txt runtime/pyproject.toml operator/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "Setting up .venv (first run downloads TensorFlow; later runs reuse the cache)" >&2
$UV venv --quiet --allow-existing --python "$PYTHON" .venv
$UV pip install --quiet --python .venv/bin/python -r requirements/dev.txt
$UV pip install --quiet --python .venv/bin/python --no-deps -e runtime -e operator
echo "$want" > "$stamp"
