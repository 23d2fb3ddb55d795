"""A small HTTP client for the bench's own calls: http.client, one connection per client
(reopened when the server closes it), JSON in and out. Lighter than requests, so the
client takes less of the cores the system under test runs on."""

from __future__ import annotations

import http.client
import json
import threading
import time
from urllib.parse import urlsplit


class Api:
    """Calls to agentq's API (or the bare app) with a bearer token."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self._conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body=None, *, expect: int | tuple = (200, 201)):
        """The response's JSON; :raises RuntimeError: for a status not in ``expect``."""
        payload = json.dumps(body) if body is not None else None
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                self._conn.request(method, path, payload, self.headers)
                response = self._conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed a kept-alive connection between two calls: reopen.
                self._conn.close()
                self._conn = None
                if attempt == 2:
                    raise
                continue
            if response.getheader("Connection", "").lower() == "close":
                self._conn.close()
                self._conn = None
            break
        expected = (expect,) if isinstance(expect, int) else expect
        if response.status not in expected:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:500]!r}")
        return json.loads(data) if data else None

    def timed(self, method: str, path: str, body=None) -> tuple[float, float, dict]:
        """Call and return (time sent, time answered, JSON), in ``time.time()`` seconds."""
        sent = time.time()
        data = self.call(method, path, body)
        return sent, time.time(), data

    def submit(self, job_type: str, input_data: dict, priority: int = 5) -> dict:
        body = {
            "jobType": job_type,
            "taskDescription": "bench",
            "inputData": input_data,
            "priority": priority,
        }
        return self.call("POST", "/api/agent-jobs", body)["job"]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def submit_many(
    url: str, token: str, job_type: str, input_data: dict, count: int, *, threads: int = 4
) -> None:
    """Submit ``count`` jobs from ``threads`` clients at once, saying how far it got."""
    from bench.harness import say

    left = iter(range(count))
    lock = threading.Lock()
    sent = [0]
    errors: list[BaseException] = []

    def client() -> None:
        api = Api(url, token)
        try:
            while True:
                with lock:
                    if next(left, None) is None or errors:
                        return
                api.submit(job_type, input_data)
                with lock:
                    sent[0] += 1
        except BaseException as exc:
            errors.append(exc)
        finally:
            api.close()

    workers = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    last = time.monotonic()
    while any(w.is_alive() for w in workers):
        for w in workers:
            w.join(0.5)
        if time.monotonic() - last > 10:
            say(f"  submitted {sent[0]:,} of {count:,} {job_type} jobs")
            last = time.monotonic()
    if errors:
        raise errors[0]
