#!/usr/bin/env bash
# Build Dockerfile.runtime and Dockerfile.operator with buildah (no Docker engine) and load them into the
# local cluster's containerd (tests/cluster/node.py), where pods use them with imagePullPolicy IfNotPresent.
#
# No image can be pulled here, so the base image is made locally: Debian bookworm (debootstrap, from the
# apt mirror this machine already uses) with python3 and pip, plus the CA certificates this machine trusts
# so that `pip install` inside a build verifies the same hosts the host does. The Dockerfiles stay valid
# for a normal `docker build` elsewhere: the base is a build argument with a real default.
#
# Every image is tagged with a hash of what goes into it (Dockerfile, requirements, sources), and nothing
# whose tag is already there is rebuilt: a second run takes seconds. The tags land in
#   ${MODELSERVICE_CACHE:-~/.cache/modelservice}/images.env  (RUNTIME_IMAGE=..., OPERATOR_IMAGE=...)
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${MODELSERVICE_CACHE:-$HOME/.cache/modelservice}
work=$cache/images
mkdir -p "$work"
[ "$(id -u)" = 0 ] || { echo "images.sh: buildah and containerd need root here" >&2; exit 1; }
scripts/install-node-deps.sh
step() { printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
started=$(date +%s)
# buildah's own storage, outside the repository and separate from the machine's default.
export CONTAINERS_STORAGE_CONF=$work/storage.conf
cat > "$CONTAINERS_STORAGE_CONF" <<CONF
[storage]
driver = "overlay"
graphroot = "$work/storage"
runroot = "/run/modelservice-buildah"
CONF
has_image() { buildah images --quiet "$1" >/dev/null 2>&1; }

base=localhost/modelservice-base:bookworm-py3
if ! has_image "$base"; then
  # The mirror apt already uses on this machine (deb822 .sources or a classic sources.list line).
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$mirror" ] || { echo "images.sh: no Debian mirror found in /etc/apt" >&2; exit 1; }
  rootfs=$work/rootfs-bookworm
  rm -rf "$rootfs"
  step "Making the base image: debootstrap bookworm (minbase) with python3 and pip"
  debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates,passwd \
    bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  # Trust what the host trusts (extra CAs only; Debian's bundle is in the package).
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  fi
  chroot "$rootfs" update-ca-certificates >/dev/null
  # An image's Python is the image's own, as in the official python images: pip may install into it.
  rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  ctr=$(buildah from scratch)
  mnt=$(buildah mount "$ctr")
  cp -a "$rootfs"/. "$mnt"/
  buildah umount "$ctr" >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env PIP_CERT=/etc/ssl/certs/ca-certificates.crt --cmd python3 "$ctr"
  buildah commit --quiet --rm "$ctr" "$base" >/dev/null
  rm -rf "$rootfs"
fi

pause=localhost/modelservice-pause:3.10
if ! has_image "$pause"; then
  step "Making the pause image: Kubernetes' pause.c, static, FROM scratch"
  k8s=$(sed -n 's/^K8S_VERSION=//p' tests/cluster/versions.env)
  src=$(mkdir -p "$work/src" && cd "$work/src" && GOTOOLCHAIN=local go mod download -json "k8s.io/kubernetes@$k8s" \
        | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
  gcc -Os -static -DVERSION=3.10-modelservice -o "$work/pause" "$src/build/pause/linux/pause.c"
  strip "$work/pause"
  ctr=$(buildah from scratch)
  buildah copy --quiet "$ctr" "$work/pause" /pause >/dev/null
  buildah config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
  buildah commit --quiet --rm "$ctr" "$pause" >/dev/null
fi

tree_hash() {  # the inputs of one image: its Dockerfile and the tracked files it copies
  { cat "$1"; git ls-files -s -- "${@:2}"; git diff --no-ext-diff -- "${@:2}"; } | sha256sum | cut -c1-12
}
build() {  # name dockerfile inputs...
  local name=$1 dockerfile=$2 tag
  tag=localhost/modelservice-$name:$(tree_hash "$dockerfile" "${@:3}")
  if ! has_image "$tag"; then
    step "Building $dockerfile as $tag (buildah; layers cached, so only changed steps rerun)"
    buildah build --quiet --format docker --layers --isolation chroot --network host -f "$dockerfile" \
      --build-arg BASE_IMAGE="$base" -t "$tag" . >/dev/null
  fi
  echo "$tag"
}
runtime=$(build runtime Dockerfile.runtime requirements/runtime.txt runtime)
operator=$(build operator Dockerfile.operator requirements/operator.txt operator crds)
printf 'RUNTIME_IMAGE=%s\nOPERATOR_IMAGE=%s\nPAUSE_IMAGE=%s\n' "$runtime" "$operator" "$pause" > "$cache/images.env.tmp"
mv "$cache/images.env.tmp" "$cache/images.env"
step "Images ready in $(( $(date +%s) - started ))s: $runtime, $operator (tags in $cache/images.env)"
