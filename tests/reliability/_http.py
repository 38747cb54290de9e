"""Real HTTP against the ledger: a tiny client, and gunicorn run in a subprocess on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Reply:
    """One HTTP response, read in full."""

    status: int
    headers: Mapping[str, str]
    """Header names lower-cased."""
    body: bytes
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    port: int,
    method: str,
    path: str,
    *,
    body: object = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    """Send one request on a fresh connection to ``127.0.0.1:port``.

    Raises ``OSError`` (refused, reset, timed out) or ``http.client.HTTPException`` when no
    complete response arrives.
    """
    sent_headers = dict(headers or {})
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        sent_headers["Content-Type"] = "application/json"
    started = time.monotonic()
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request(method, path, body=payload, headers=sent_headers)
        response = connection.getresponse()
        data = response.read()
        received = {name.lower(): value for name, value in response.getheaders()}
        return Reply(response.status, received, data, time.monotonic() - started)
    finally:
        connection.close()


class Gunicorn:
    """The ledger under gunicorn, started in a subprocess and stopped at the end of the block.

    ``app`` is a gunicorn app spec such as ``"ledger.app:create_app()"``; secrets go in
    ``env`` (e.g. ``DATABASE_URL``), never on the command line.
    """

    def __init__(
        self,
        app: str,
        *,
        env: Mapping[str, str],
        log_path: Path,
        worker_class: str = "gthread",
        workers: int = 2,
        threads: int = 8,
        worker_connections: int = 200,
        timeout: int = 30,
    ) -> None:
        self.app = app
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log_path = log_path
        self.worker_class = worker_class
        self.workers = workers
        self.threads = threads
        self.worker_connections = worker_connections
        self.timeout = timeout
        self.port = 0
        self.workers_killed = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, "gunicorn is not running"
        return self._process.pid

    def start(self, *, ready_within: float = 30.0) -> int:
        """Start gunicorn and wait until every worker answers ``/health``; returns the port."""
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"{HOST}:0",
            "--workers",
            str(self.workers),
            "--worker-class",
            self.worker_class,
            "--threads",
            str(self.threads),
            "--worker-connections",
            str(self.worker_connections),
            "--timeout",
            str(self.timeout),
            "--graceful-timeout",
            "5",
            "--no-control-socket",
            "--log-level",
            "info",
            self.app,
        ]
        log = self.log_path.open("wb")
        try:
            self._process = subprocess.Popen(
                command,
                env=self.env,
                cwd=self.log_path.parent,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + ready_within
        while not self.port:
            match = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", self.log())
            if match:
                self.port = int(match.group(1))
            elif self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gunicorn did not start:\n{self.log()}")
            else:
                time.sleep(0.05)  # poll interval
        self.wait_ready(deadline - time.monotonic())
        return self.port

    def wait_ready(self, seconds: float) -> None:
        """Wait until all workers booted and ``/health`` answers 200."""
        deadline = time.monotonic() + max(seconds, 1.0)
        while time.monotonic() < deadline:
            if len(self.worker_pids()) >= self.workers:
                try:
                    if call(self.port, "GET", "/health", timeout=5).status == 200:
                        return
                except (OSError, http.client.HTTPException):
                    pass
            time.sleep(0.05)  # poll interval
        raise RuntimeError(f"gunicorn is not ready after {seconds:.0f} s:\n{self.log()}")

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (Linux: read from /proc)."""
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split()]

    def kill_worker(self, pid: int) -> bool:
        """SIGKILL one worker mid-flight, as a crash would; the master starts another."""
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        self.workers_killed += 1
        return True

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> int | None:
        """Stop gracefully (SIGTERM), or kill after 15 s; returns the exit status."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)
        return process.returncode

    def __enter__(self) -> Gunicorn:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
