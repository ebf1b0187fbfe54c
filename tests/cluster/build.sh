#!/usr/bin/env bash
# Build the local control plane from the Go module proxy into a cache outside the repository:
#   ${MODELSERVICE_CACHE:-~/.cache/modelservice}/cluster/bin/<component>-<version>
# A component whose binary is already there is skipped, so a second run takes seconds.
#
# k8s.io/kubernetes cannot be `go install`ed (its go.mod replaces the staging modules with local
# paths), so it is built from a wrapper module whose replace directives are generated from the
# downloaded go.mod: every `k8s.io/x => ./staging/src/k8s.io/x` becomes `k8s.io/x => k8s.io/x v0.<minor>.<patch>`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${MODELSERVICE_CACHE:-$HOME/.cache/modelservice}/cluster
bin=$cache/bin
mkdir -p "$bin" "$cache/src"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"
command -v go >/dev/null || { echo "build.sh: Go is required (https://go.dev/dl)" >&2; exit 1; }

step() { printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
have() { [ -x "$bin/$1" ]; }
started=$(date +%s)

staging=${K8S_VERSION/v1./v0.}
kube_ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z \
 -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"

need_kube=false
for c in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
  have "$c-$K8S_VERSION" || need_kube=true
done
if $need_kube; then
  wrapper=$cache/src/kubernetes-$K8S_VERSION
  mkdir -p "$wrapper"
  step "Resolving k8s.io/kubernetes@$K8S_VERSION and generating the wrapper module's replaces"
  gomod=$(cd "$wrapper" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  goline=$(grep -m1 '^go ' "$gomod")
  {
    echo "module modelservice.local/kubernetes"
    echo
    echo "$goline"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/' "$gomod" \
      | sed -E "s#^\s*(k8s\.io/[a-z0-9-]+) => .*#replace \1 => \1 $staging#"
  } > "$wrapper/go.mod"
  echo "$(grep -c '^replace' "$wrapper/go.mod") staging modules replaced with $staging" >&2
  for c in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
    if have "$c-$K8S_VERSION"; then continue; fi
    pkg=k8s.io/kubernetes/cmd/$c
    [ "$c" = kubectl ] && pkg=k8s.io/kubernetes/cmd/kubectl
    step "Building $c $K8S_VERSION (the first component takes longest: it compiles the shared packages)"
    (cd "$wrapper" && go build -trimpath -ldflags "$kube_ldflags" -o "$bin/$c-$K8S_VERSION.tmp" "$pkg")
    mv "$bin/$c-$K8S_VERSION.tmp" "$bin/$c-$K8S_VERSION"
  done
fi

if ! have "etcd-$ETCD_VERSION"; then
  step "Building etcd $ETCD_VERSION"
  src=$cache/src/etcd-$ETCD_VERSION
  mkdir -p "$src"
  cp "$here/go/etcd/main.go" "$src/main.go"
  sed "s#^require go.etcd.io/etcd/server/v3 .*#require go.etcd.io/etcd/server/v3 $ETCD_VERSION#" "$here/go/etcd/go.mod" > "$src/go.mod"
  (cd "$src" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd-$ETCD_VERSION.tmp" .)
  mv "$bin/etcd-$ETCD_VERSION.tmp" "$bin/etcd-$ETCD_VERSION"
fi

install_tool() {  # name version package ldflags
  local name=$1 version=$2 pkg=$3 ldflags=$4
  if have "$name-$version"; then return; fi
  step "Building $name $version"
  local gobin=$cache/src/$name-$version
  mkdir -p "$gobin"
  GOBIN=$gobin GOFLAGS="-buildvcs=false" go install -trimpath -ldflags "$ldflags" "$pkg@$version"
  mv "$gobin/$(basename "$pkg")" "$bin/$name-$version"
}
install_tool kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok \
  "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
install_tool metrics-server "$METRICS_SERVER_VERSION" sigs.k8s.io/metrics-server/cmd/metrics-server \
  "-s -w -X k8s.io/component-base/version.gitVersion=$METRICS_SERVER_VERSION"
# CoreDNS for the real node's pods (cluster DNS: *.svc.cluster.local).
install_tool coredns "$COREDNS_VERSION" github.com/coredns/coredns \
  "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
install_tool helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
  "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
# MinIO: the S3 server the s3:// model source tests download from (tests/minio.py).
install_tool minio "$MINIO_VERSION" github.com/minio/minio "-s -w"

stages=$cache/kwok-stages-$KWOK_VERSION
if [ ! -f "$stages/pod-ready.yaml" ]; then
  # kwok >= 0.8 has no built-in stages: use the "fast" node and pod lifecycles it publishes with
  # this very version (nodes Ready with a lease heartbeat; pods Running and Ready at once).
  step "Fetching kwok $KWOK_VERSION's stage definitions"
  kwok_src=$(cd "$cache/src" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
  mkdir -p "$stages"
  cp "$kwok_src/kustomize/stage/node/fast/node-initialize.yaml" \
     "$kwok_src/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" \
     "$kwok_src/kustomize/stage/pod/fast/pod-ready.yaml" \
     "$kwok_src/kustomize/stage/pod/fast/pod-complete.yaml" \
     "$kwok_src/kustomize/stage/pod/fast/pod-delete.yaml" "$stages/"
  chmod u+w "$stages"/*.yaml
fi

gateway=$cache/gateway-api-$GATEWAY_API_VERSION
if [ ! -f "$gateway/gateway.networking.k8s.io_httproutes.yaml" ]; then
  # The Gateway API CRDs ship inside its Go module: no registry besides the module proxy is needed.
  step "Fetching the Gateway API $GATEWAY_API_VERSION CRDs"
  gateway_src=$(cd "$cache/src" && go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
  mkdir -p "$gateway"
  for kind in gatewayclasses gateways httproutes grpcroutes referencegrants; do
    cp "$gateway_src/config/crd/standard/gateway.networking.k8s.io_$kind.yaml" "$gateway/"
  done
  chmod u+w "$gateway"/*.yaml
fi

step "Control plane binaries ready in $bin ($(( $(date +%s) - started ))s this run, $(du -sh "$bin" | cut -f1) of binaries)"
