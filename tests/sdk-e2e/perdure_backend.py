"""A pytest plugin that runs the Durable Task Python SDK's own end-to-end tests against Perdure.

The SDK's e2e tests (tests/durabletask/test_*_e2e.py of microsoft/durabletask-python) start
the SDK's in-memory sidecar with `durabletask.testing.create_test_backend(port=PORT)` and
connect to `localhost:PORT`. This plugin replaces that function before the tests are
imported: each call starts `perdure-node dev --memory --grpc 127.0.0.1:PORT` instead
(`PERDURE_NODE_BIN` names the binary) and `stop()` stops it. The tests themselves run
unmodified. See tests/sdk-e2e/run.sh.
"""

import os
import socket
import subprocess
import tempfile
import time

import durabletask.testing as testing

NODE = os.environ.get("PERDURE_NODE_BIN", "perdure-node")


class PerdureBackend:
    """A dev node on the given port, with the API of the SDK's in-memory backend that the
    tests use (`stop`, `reset`)."""

    def __init__(self, port):
        self.port = port
        self.log = tempfile.NamedTemporaryFile(prefix="perdure-e2e-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [NODE, "dev", "--memory", "--http", "127.0.0.1:0", "--grpc", f"127.0.0.1:{port}",
             "--log", "warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"perdure-node did not serve port {port}; see {self.log.name}")
                time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def reset(self):
        pass


def create_test_backend(port=50051, max_history_size=10000):
    return PerdureBackend(port)


testing.create_test_backend = create_test_backend
