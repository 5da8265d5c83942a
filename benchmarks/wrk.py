"""HTTP load with wrk (a C load generator: little CPU taken from the server it measures).

`ensure_wrk` installs Debian's package when wrk is missing (the benchmarks' set-up; needs
root or sudo). `run_wrk` requests a list of paths in turn (each wrk thread starting at its
own place) with one header set, and returns wrk's own summary: requests per second and
latency percentiles over every request of the run.
"""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

LUA = """
local paths = {%(paths)s}
local header = {["Authorization"] = "%(authorization)s"}
local next_path = 0

init = function(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
  next_path = math.random(#paths) - 1
end

request = function()
  next_path = (next_path + 1) %% #paths
  return wrk.format("GET", paths[next_path + 1], header)
end

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'WRK-JSON {"requests": %%d, "duration_us": %%d, "bytes": %%d, "connect_errors": %%d, '
    .. '"read_errors": %%d, "write_errors": %%d, "status_errors": %%d, "timeouts": %%d, '
    .. '"p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "max_us": %%d, "mean_us": %%f}\\n',
    summary.requests, summary.duration, summary.bytes, errors.connect, errors.read,
    errors.write, errors.status, errors.timeout, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


def ensure_wrk() -> str:
    """The wrk executable; installs Debian's `wrk` package when it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    try:
        subprocess.run([*prefix, "apt-get", "install", "-y", "-qq", "wrk"], check=True,
                       capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or str(error)
        raise RuntimeError("wrk is not installed and `apt-get install wrk` failed (the HTTP "
                           f"benchmarks need it): {detail.strip()[-500:]}") from error
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("`apt-get install wrk` ran but wrk is not on PATH")
    return found


def run_wrk(url: str, paths: list[str], authorization: str, seconds: float,
            connections: int = 32, threads: int = 2) -> dict:
    """wrk against `url` + each path in turn for `seconds`: requests/s, latency percentiles
    (ms) and error counts (a non-2xx answer is an error)."""
    executable = ensure_wrk()
    lua = LUA % {"paths": ", ".join(json.dumps(path) for path in paths),
                 "authorization": authorization}
    with tempfile.TemporaryDirectory(prefix="tailor-wrk-") as workdir:
        script = Path(workdir) / "paths.lua"
        script.write_text(lua)
        completed = subprocess.run(
            [executable, f"-t{threads}", f"-c{connections}", f"-d{seconds:.0f}s",
             "--timeout", "10s", "-s", str(script), url],
            check=True, capture_output=True, text=True)
    line = next(row for row in completed.stdout.splitlines() if row.startswith("WRK-JSON "))
    found = json.loads(line.removeprefix("WRK-JSON "))
    errors = sum(found[name] for name in ("connect_errors", "read_errors", "write_errors",
                                          "status_errors", "timeouts"))
    return {"n": found["requests"],
            "per_second": found["requests"] / (found["duration_us"] / 1e6),
            "p50_ms": found["p50_us"] / 1e3, "p90_ms": found["p90_us"] / 1e3,
            "p99_ms": found["p99_us"] / 1e3, "max_ms": found["max_us"] / 1e3,
            "mean_ms": found["mean_us"] / 1e3, "errors": errors,
            "connections": connections, "threads": threads, "seconds": seconds}
