#!/usr/bin/env bash
# make demo: the main job, end to end on this machine.
#  1. the local Kubernetes control plane (built from source on first use, with progress),
#  2. the ModelService CRD and the operator,
#  3. a GPU ModelService applied and Ready on a (fake) A100 node: kubectl get ms,deploy,pods,svc,hpa,
#  4. the same model served by the runtime with the arguments the operator rendered, and a real prediction.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=examples/models/out
STATE=${MODELSERVICE_CACHE:-$HOME/.cache/modelservice}/demo
PORT=${PORT:-8501}
mkdir -p "$OUT" "$STATE"
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "Starting the local control plane (first run builds it from the Go module proxy: ~8 min on 2 cores)"
$PY -m tests.cluster.harness up
export KUBECONFIG
KUBECONFIG=$($PY -m tests.cluster.harness kubeconfig)
kubectl=$($PY -c 'from tests.cluster import harness; print(harness.binary("kubectl"))')

say "Installing the ModelService CRD"
$kubectl apply -f crds/modelservice.yaml -f crds/kopf-peering.yaml
$kubectl wait --for=condition=Established crd/modelservices.serving.modelservice.io --timeout=60s

say "Running the operator (log: $STATE/operator.log)"
.venv/bin/modelservice-operator run --all-namespaces --liveness-port=0 \
  --metrics-port=0 >"$STATE/operator.log" 2>&1 &
operator=$!
runtime=""
cleanup() {
  [ -n "$runtime" ] && kill -TERM "$runtime" 2>/dev/null && wait "$runtime" 2>/dev/null
  kill -TERM "$operator" 2>/dev/null && wait "$operator" 2>/dev/null
  true
}
trap cleanup EXIT

say "Applying examples/digits-gpu.yaml (1 x NVIDIA A100 per replica) in namespace demo"
$kubectl create namespace demo --dry-run=client -o yaml | $kubectl apply -f -
$kubectl apply -f - <<'YAML'
apiVersion: v1
kind: PersistentVolume
metadata: {name: demo-models}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadOnlyMany]
  storageClassName: ""
  hostPath: {path: /srv/models}
  claimRef: {namespace: demo, name: models}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: models, namespace: demo}
spec:
  accessModes: [ReadOnlyMany]
  storageClassName: ""
  volumeName: demo-models
  resources: {requests: {storage: 1Gi}}
YAML
$kubectl -n demo wait --for=jsonpath='{.status.phase}'=Bound pvc/models --timeout=60s
$kubectl -n demo apply -f examples/digits-gpu.yaml
$kubectl -n demo wait --for=condition=Ready ms/digits --timeout=120s
$kubectl -n demo get ms,deploy,pods,svc,hpa -o wide

say "Serving the same model locally with the runtime, using the arguments the operator rendered"
if [ ! -d "$OUT/digits/1" ]; then
  $PY examples/models/digits.py --out "$OUT"
fi
deployment=$($kubectl -n demo get ms digits -o jsonpath='{.status.deployment}')   # digits-<revision>
mapfile -t args < <($kubectl -n demo get deploy "$deployment" -o jsonpath='{range .spec.template.spec.containers[0].args[*]}{@}{"\n"}{end}')
printf '    %s\n' "${args[@]}"
local_args=()
for arg in "${args[@]}"; do
  case "$arg" in
    --model_base_path=*) local_args+=("--model_base_path=$PWD/$OUT/digits") ;;  # the PVC's content, here
    --rest_api_port=*) local_args+=("--rest_api_port=$PORT") ;;
    *) local_args+=("$arg") ;;
  esac
done
TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/modelservice-runtime "${local_args[@]}" --rest_api_host=127.0.0.1 \
  --log_format=text >"$STATE/runtime.log" 2>&1 &
runtime=$!
for _ in $(seq 1 240); do
  curl -fsS "http://127.0.0.1:$PORT/v2/health/ready" >/dev/null 2>&1 && break
  kill -0 "$runtime" 2>/dev/null || { cat "$STATE/runtime.log"; exit 1; }
  sleep 0.5
done
sample=$(ls "$OUT"/digits-samples/*.png | head -3)
say "POST /v1/models/digits:predict with PNG uploads: $(echo $sample | xargs -n1 basename | tr '\n' ' ')"
curl_args=()
for f in $sample; do curl_args+=(-F "file=@$f"); done
curl -sS "${curl_args[@]}" "http://127.0.0.1:$PORT/v1/models/digits:predict" | $PY -c '
import json, sys
for i, p in enumerate(json.load(sys.stdin)["predictions"]):
    digit, probability = p["digit"], max(p["probabilities"])
    print(f"    image {i}: digit {digit} (p={probability:.3f})")'
say "Done. The cluster keeps running for you: export KUBECONFIG=$KUBECONFIG; stop it with make cluster-down"
