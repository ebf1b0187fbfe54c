#!/usr/bin/env bash
# make demo: the main job, end to end on this machine (make builds our images first: scripts/images.sh).
#  1. the local Kubernetes cluster: control plane, kwok's fake GPU nodes, one real node (tests/cluster),
#  2. the CRD, and the operator installed with its Helm chart: it runs in a pod on the real node,
#  3. examples/digits-gpu.yaml Ready on a (fake, kwok) A100 node: GPU scheduling,
#  4. the same example on the real node: a real pod of our runtime image answering predictions through
#     its Service's ClusterIP (the node's nvidia.com/gpu is advertised, not real: TensorFlow uses the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=examples/models/out
mkdir -p "$OUT"
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "Starting the local cluster (first run builds it from the Go module proxy: ~12 min on 2 cores)"
$PY -m tests.cluster.harness up
export KUBECONFIG
KUBECONFIG=$($PY -m tests.cluster.harness kubeconfig)
kubectl=$($PY -c 'from tests.cluster import harness; print(harness.binary("kubectl"))')
helm=$($PY -c 'from tests.cluster import harness; print(harness.binary("helm"))')
# shellcheck disable=SC1091
source "${MODELSERVICE_CACHE:-$HOME/.cache/modelservice}/images.env"   # RUNTIME_IMAGE, OPERATOR_IMAGE
$kubectl get nodes -L nvidia.com/gpu.product

say "Training the example models from scikit-learn's bundled data into $OUT"
[ -d "$OUT/digits/1" ] || $PY examples/models/digits.py --out "$OUT"

say "Installing the CRD, then the operator with Helm ($OPERATOR_IMAGE, in a pod on the real node)"
$kubectl apply -f crds/modelservice.yaml -f crds/kopf-peering.yaml
$kubectl wait --for=condition=Established crd/modelservices.serving.modelservice.io --timeout=60s
real_node=(--set-json 'nodeSelector={"modelservice.io/real-node":"true"}'
           --set-json 'tolerations=[{"key":"modelservice.io/real-node","operator":"Exists","effect":"NoSchedule"}]')
$helm upgrade --install modelservice charts/modelservice-operator --namespace modelservice-system \
  --create-namespace --skip-crds --wait --timeout=180s \
  --set image.repository="${OPERATOR_IMAGE%:*}" --set image.tag="${OPERATOR_IMAGE##*:}" \
  --set runtimeImage="$RUNTIME_IMAGE" "${real_node[@]}"
$kubectl -n modelservice-system get pods -o wide

models_namespace() {  # namespace host-path: a namespace with a `models` PVC on a hostPath volume
  $kubectl create namespace "$1" --dry-run=client -o yaml | $kubectl apply -f -
  $kubectl apply -f - <<YAML
apiVersion: v1
kind: PersistentVolume
metadata: {name: $1-models}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadOnlyMany]
  storageClassName: ""
  hostPath: {path: $2}
  claimRef: {namespace: $1, name: models}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: models, namespace: $1}
spec:
  accessModes: [ReadOnlyMany]
  storageClassName: ""
  volumeName: $1-models
  resources: {requests: {storage: 1Gi}}
YAML
  $kubectl -n "$1" wait --for=jsonpath='{.status.phase}'=Bound pvc/models --timeout=60s
}

say "Applying examples/digits-gpu.yaml (1 x NVIDIA A100 per replica) in namespace demo: kwok's GPU nodes"
models_namespace demo /srv/models
$kubectl -n demo apply -f examples/digits-gpu.yaml
$kubectl -n demo wait --for=condition=Ready ms/digits --timeout=120s
$kubectl -n demo get ms,pods -o wide

say "The same example on the real node (namespace demo-real): scheduling for it, and its GPU product"
models_namespace demo-real "$PWD/$OUT"
$PY - <<'PY' | $kubectl -n demo-real apply -f -
import yaml
doc = yaml.safe_load(open("examples/digits-gpu.yaml"))
doc["spec"]["scheduling"] = {
    "nodeSelector": {"modelservice.io/real-node": "true"},
    "tolerations": [{"key": "modelservice.io/real-node", "operator": "Exists", "effect": "NoSchedule"}],
}
doc["spec"]["gpu"]["product"] = "FAKE-GPU-RUNS-ON-CPU"
doc["spec"]["resources"]["requests"]["cpu"] = "250m"
print(yaml.safe_dump({"spec": {k: doc["spec"][k] for k in ("scheduling", "gpu")}}, sort_keys=False).rstrip(),
      file=__import__("sys").stderr)
print(yaml.safe_dump(doc))
PY
$kubectl -n demo-real wait --for=condition=Ready ms/digits --timeout=300s
$kubectl -n demo-real get ms,pods,svc -o wide

ip=$($kubectl -n demo-real get svc digits -o jsonpath='{.spec.clusterIP}')
sample=$(ls "$OUT"/digits-samples/*.png | head -3)
say "POST http://$ip:8501/v1/models/digits:predict (the Service's ClusterIP, through kube-proxy) with $(echo $sample | xargs -n1 basename | tr '\n' ' ')"
curl_args=()
for f in $sample; do curl_args+=(-F "file=@$f"); done
for _ in $(seq 60); do  # kube-proxy writes the new Service's rules a moment after the pod turns Ready
  curl -fsS -o /dev/null "http://$ip:8501/v1/models/digits" 2>/dev/null && break
  sleep 0.5
done
curl -sS "${curl_args[@]}" "http://$ip:8501/v1/models/digits:predict" | $PY -c '
import json, sys
for i, p in enumerate(json.load(sys.stdin)["predictions"]):
    digit, probability = p["digit"], max(p["probabilities"])
    print(f"    image {i}: digit {digit} (p={probability:.3f})")'
pod=$($kubectl -n demo-real get pods -l serving.modelservice.io/name=digits -o jsonpath='{.items[0].metadata.name}')
say "Answered by pod $pod on $($kubectl -n demo-real get pod "$pod" -o jsonpath='{.spec.nodeName}'); its log:"
$kubectl -n demo-real logs "$pod" --tail=3
say "Done. The cluster keeps running for you: export KUBECONFIG=$KUBECONFIG; stop it with make cluster-down"
