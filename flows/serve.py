"""``make serve``: a local Prefect server, the ``recs-process`` work pool, every deployment of
``prefect.yaml`` and a worker, in one command; Ctrl-C stops the worker and the server.

The server keeps its database in Prefect's home (``~/.prefect``), so runs and schedules survive a
restart. ``RECS_PREFECT_PORT`` (default 4200) picks the port.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POOL = "recs-process"


def _prefect(*args: str, env: dict[str, str]) -> None:
    exe = str(Path(sys.executable).with_name("prefect"))
    subprocess.run([exe, *args], cwd=ROOT, env=env, check=True)


def _wait_healthy(url: str, server: subprocess.Popen[bytes], timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the Prefect server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"the Prefect server did not answer on {url} within {timeout_s:.0f} s")


def main() -> int:
    port = os.environ.get("RECS_PREFECT_PORT", "4200")
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    exe = str(Path(sys.executable).with_name("prefect"))
    print(f"starting the Prefect server on http://127.0.0.1:{port} ...", flush=True)
    server = subprocess.Popen(
        [exe, "server", "start", "--host", "127.0.0.1", "--port", port], cwd=ROOT, env=env
    )
    worker: subprocess.Popen[bytes] | None = None
    try:
        _wait_healthy(api, server)
        _prefect("work-pool", "create", POOL, "--type", "process", "--overwrite", env=env)
        _prefect("--no-prompt", "deploy", "--all", env=env)
        print(
            f"\nready: the UI is http://127.0.0.1:{port} (Deployments); the nightly runs at "
            "02:00 UTC; Ctrl-C stops the worker and the server\n",
            flush=True,
        )
        worker = subprocess.Popen([exe, "worker", "start", "--pool", POOL], cwd=ROOT, env=env)
        return worker.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in (worker, server):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    sys.exit(main())
