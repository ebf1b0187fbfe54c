#!/usr/bin/env bash
# Debian's Prometheus, for the integration test of the analysis' Prometheus provider. Installed only when
# missing and only with apt-get as root; otherwise say what to install.
set -euo pipefail
command -v prometheus >/dev/null && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "==> Installing Debian's prometheus package (the analysis provider's integration test runs it)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  exit 0
fi
echo "install-prometheus.sh: install Prometheus (e.g. 'sudo apt-get install prometheus'); the tests run it" >&2
exit 1
