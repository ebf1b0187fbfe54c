# ModelService: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
PY := .venv/bin/python
PYTEST := $(PY) -m pytest -p no:cacheprovider

.PHONY: images prometheus venv demo demo-runtime test lint unit integration e2e examples golden bench bench-operator clean \
	cluster-build cluster-up cluster-down cluster-status cluster-kubeconfig

venv:
	@scripts/bootstrap.sh

## demo: local control plane + our images + CRD + operator; a GPU ModelService Ready on a (kwok) A100 node,
##       then the iris example on the real node answering predictions through its Service
demo: venv images
	@scripts/demo.sh

## demo-runtime: only the runtime: train the iris example, serve it under Gunicorn, call it with curl
demo-runtime: venv
	@scripts/demo-runtime.sh

## test: lint, type-check, then unit tests (fast), integration tests (real models, real Gunicorn, the
##       real operator against KMock) and e2e tests (the real local control plane; built on first use)
test: lint unit integration e2e

lint: venv
	.venv/bin/ruff check runtime operator tests examples bench
	.venv/bin/ruff format --check runtime operator tests examples bench
	.venv/bin/mypy runtime/src operator/src bench
	.venv/bin/lint-imports
	.venv/bin/hadolint Dockerfile.runtime Dockerfile.operator

unit: venv
	$(PYTEST) tests/unit -q

integration: venv prometheus cluster-build
	$(PYTEST) tests/integration -q

## prometheus: Debian's Prometheus for the analysis provider's integration test (installed when missing)
prometheus:
	@scripts/install-prometheus.sh

e2e: venv cluster-build images
	$(PYTEST) tests/e2e -q

## images: build Dockerfile.runtime and Dockerfile.operator with buildah on a local Debian base (root; the
##         first build takes minutes, an unchanged tree seconds) and load them into the real node when it is up
images: venv
	@scripts/images.sh
	@$(PY) -m tests.cluster.harness load-images

## bench: the runtime side by side with the Flask ceiling, a naive Flask server and KServe (about 12 minutes;
##        scripts/bench-deps.sh installs wrk and builds .venv-kserve first; see README)
bench: venv
	@scripts/bench-deps.sh
	$(PY) -m bench.serving_bench

## bench-operator: 1,000 ModelServices at once on the local control plane: time to Ready, RSS, API requests
bench-operator: venv
	$(PY) -m bench.operator_scale

## cluster-*: the local control plane (etcd, apiserver, controller-manager, scheduler, kwok, metrics-server)
##            and the real node (containerd, kubelet, kube-proxy, CoreDNS; see tests/cluster/node.py)
cluster-build:
	@bash tests/cluster/build.sh

cluster-up: venv
	@$(PY) -m tests.cluster.harness up

cluster-down:
	@$(PY) -m tests.cluster.harness down

cluster-status:
	@$(PY) -m tests.cluster.harness status

cluster-kubeconfig:
	@$(PY) -m tests.cluster.harness kubeconfig

## golden: refresh the rendered-manifest golden files after an intended renderer change (review the diff)
golden: venv
	$(PYTEST) tests/unit/operator/test_render.py -q --update-golden

## examples: build the example models into examples/models/out
examples: venv
	$(PY) examples/models/iris.py --out examples/models/out
	$(PY) examples/models/digits.py --out examples/models/out

clean:
	rm -rf .venv examples/models/out .pytest_cache .mypy_cache .ruff_cache
