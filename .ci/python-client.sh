#!/usr/bin/env bash
# Installs the official Python Durable Functions client (azure-functions-durable) and the
# Durable Task Python SDK (durabletask, a gRPC client), and Selenium (the dashboard's browser
# test) into a virtual environment under
# target/, for tests/python/drive_node.py and tests/python/durabletask_client.py and the Rust
# tests that run them (tests/tests/python_client.rs, tests/tests/python_durabletask.rs).
# Idempotent; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${PERDURE_PY_VENV:-target/python-venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import azure.durable_functions" 2>/dev/null; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "azure-functions-durable==1.7.0"
fi
if ! "$VENV/bin/python" -c "import durabletask.client" 2>/dev/null; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "durabletask==1.12.0"
fi
# Selenium drives Debian's chromium-driver for the dashboard's browser test
# (tests/python/dashboard.py); it is given the driver's path, so it downloads nothing.
if ! "$VENV/bin/python" -c "import selenium" 2>/dev/null; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "selenium==4.27.1"
fi
"$VENV/bin/python" -c "import azure.durable_functions, sys; print('python client ready:', sys.executable)"
"$VENV/bin/python" -c "import durabletask.client, sys; print('durabletask client ready:', sys.executable)"
