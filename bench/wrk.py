"""HTTP load with wrk (Debian's ``wrk``): a fixed request, N connections, a duration.

wrk runs a Lua script made for each call; its ``done`` hook prints the run's totals
and latency percentiles as one JSON line, which :func:`run` returns parsed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: Latency percentiles read from wrk: 1..99 and 99.9 (for the plot and the table).
PERCENTILES = [*range(1, 100), 99.9]

_SCRIPT = """
wrk.method = %(method)s
wrk.body = %(body)s
%(headers)s
function done(summary, latency, requests)
  local p = {}
  for _, q in ipairs({%(percentiles)s}) do
    p[#p + 1] = string.format("%%.1f", latency:percentile(q))
  end
  local e = summary.errors
  io.write(string.format(
    '\\nWRK {"requests": %%d, "duration_us": %%d, "socket_errors": %%d, "status_errors": %%d, ' ..
    '"latency_us": [%%s]}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    table.concat(p, ", ")))
end
"""


@dataclass
class Load:
    requests: int
    seconds: float
    #: Latency in milliseconds at each of PERCENTILES.
    latency_ms: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def p(self, q: float) -> float:
        return self.latency_ms[PERCENTILES.index(q)]


def available() -> bool:
    return shutil.which("wrk") is not None


def _lua(value: str) -> str:
    """A Lua string literal."""
    return (
        '"' + "".join(c if c.isalnum() or c in " -_./:" else f"\\{ord(c):03d}" for c in value) + '"'
    )


def run(
    url: str,
    *,
    connections: int,
    seconds: float,
    method: str = "GET",
    body: str = "",
    headers: dict[str, str] | None = None,
    expect_errors: bool = False,
) -> Load:
    """Run wrk against ``url``; one wrk thread (the cores are the system's, not the client's).

    :raises RuntimeError: when a request failed (a socket error or a status >= 400), unless
        ``expect_errors``.
    """
    header_lines = "\n".join(
        f"wrk.headers[{_lua(k)}] = {_lua(v)}" for k, v in (headers or {}).items()
    )
    script = _SCRIPT % {
        "method": _lua(method),
        "body": _lua(body),
        "headers": header_lines,
        "percentiles": ", ".join(str(p) for p in PERCENTILES),
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as out:
        out.write(script)
    try:
        done = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{max(seconds, 1):.0f}s",
                "--timeout",
                "10s",
                "-s",
                out.name,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
    finally:
        Path(out.name).unlink()
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    figures = json.loads(line[4:])
    errors = figures["socket_errors"] + figures["status_errors"]
    if errors and not expect_errors:
        raise RuntimeError(f"wrk: {errors} of {figures['requests']} requests failed on {url}")
    return Load(
        requests=figures["requests"],
        seconds=figures["duration_us"] / 1e6,
        latency_ms=[us / 1000 for us in figures["latency_us"]],
    )
