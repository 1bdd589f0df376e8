"""A local S3 emulator (moto's server) for an embedded broker that survives its own restart.

Tansu keeps topics in memory unless it is given an object store; the fault tests and
``bench.faults`` stop and restart the broker mid-stream, which only means something if the
broker keeps its data the way Kafka does. moto is a test dependency (``.[test]``); nothing in
the services needs it. Loopback only; the credentials are the emulator's placeholders, not
secrets.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from layerwatch.core.embedded import EmbeddedServerError, free_port, port_open

BUCKET = "tansu"


class EmbeddedObjectStore:
    """moto's S3 server on a free loopback port, with one bucket for the broker."""

    def __init__(self, home: Path) -> None:
        self.dir = home.resolve() / "s3"
        self.port = 0
        self._proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage(self) -> str:
        return f"s3://{BUCKET}/"

    def broker_env(self) -> dict[str, str]:
        """What Tansu's S3 client reads (object_store's AWS_* variables)."""
        return {
            "AWS_ACCESS_KEY_ID": "layerwatch-local",
            "AWS_SECRET_ACCESS_KEY": "layerwatch-local",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    def start(self, timeout: float = 30.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        with open(self.dir / "moto.log", "ab") as out:
            self._proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not port_open("127.0.0.1", self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise EmbeddedServerError(
                    f"the S3 emulator did not start (is moto installed?): see {self.dir}/moto.log"
                )
            time.sleep(0.1)
        req = urllib.request.Request(f"{self.endpoint}/{BUCKET}", method="PUT")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(10)
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
