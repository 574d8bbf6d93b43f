#!/usr/bin/env bash
# Runs the Durable Task Python SDK's own end-to-end tests against perdure-node (issue 11).
#
# Usage: tests/sdk-e2e/run.sh DURABLETASK_PYTHON_CHECKOUT [pytest args...]
#
# DURABLETASK_PYTHON_CHECKOUT is a checkout of microsoft/durabletask-python (not part of this
# repository, and not fetched by CI: this machine's network reaches package registries only).
# The SDK's in-memory test sidecar is replaced by a dev node per test
# (tests/sdk-e2e/perdure_backend.py); the tests run unmodified, with the checkout's SDK.
# Results and the reasons of the failures: docs/grpc.md ("The SDK's own end-to-end tests").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SDK="${1:?usage: tests/sdk-e2e/run.sh DURABLETASK_PYTHON_CHECKOUT [pytest args...]}"
shift
PY="$ROOT/target/python-venv/bin/python"
[ -x "$PY" ] || bash "$ROOT/.ci/python-client.sh"
"$PY" -m pip install -q pytest
if [ -z "${PERDURE_NODE_BIN:-}" ]; then
  (cd "$ROOT" && cargo build -q -p perdure-node)
  export PERDURE_NODE_BIN="$ROOT/target/debug/perdure-node"
fi
cd "$SDK"
PYTHONPATH="$ROOT/tests/sdk-e2e${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m pytest -p perdure_backend \
  tests/durabletask/test_orchestration_e2e.py \
  tests/durabletask/test_rewind_e2e.py \
  tests/durabletask/test_orchestration_versioning_e2e.py \
  tests/durabletask/test_work_item_filters_e2e.py \
  tests/durabletask/entities/test_function_based_entities_e2e.py \
  tests/durabletask/entities/test_class_based_entities_e2e.py \
  -q -rf "$@"
