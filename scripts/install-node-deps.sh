#!/usr/bin/env bash
# Debian's packages for the local cluster's real node (tests/cluster/node.py) and for building our images
# without a Docker engine (scripts/images.sh). Installed only when missing and only with apt-get as root.
set -euo pipefail
packages=(containerd runc containernetworking-plugins iptables conntrack iproute2 buildah debootstrap
          uidmap fuse-overlayfs libc6-dev gcc)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "==> Installing Debian's ${missing[*]} (the real node and image builds use them)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts containerd as a service on install where systemd runs; the node runs its own.
  exit 0
fi
echo "install-node-deps.sh: install ${missing[*]} (as root: apt-get install ...); the real node needs them" >&2
exit 1
