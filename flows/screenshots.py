"""``make screenshots``: the MLflow UI as a reviewer sees it, captured into ``docs/``.

In a scratch data folder it runs the demo night, then a retrain-only run (so the second version
is compared with a champion), starts ``mlflow ui`` on that store, and takes headless Chromium
screenshots of the run's overview, two of its review plots (the learning curve, precision@k
against popularity and the champion) and the registered version's page (the model card).
Needs Debian's ``chromium`` (``apt-get install chromium``); nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
DOCS = PROJECT / "docs"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--window-size=1400,1000", "--virtual-time-budget=20000",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {seconds:.0f} s")


def _shot(chromium: str, url: str, out: Path, profile: Path) -> None:
    subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out}", url],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    print(f"  {out.relative_to(PROJECT)}")


def main() -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("screenshots need Chromium: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="recs-screenshots-") as tmp:
        root = Path(tmp)
        env = {
            **os.environ,
            "RECS_DATA_DIR": str(root / "data"),
            "RECS_MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
            "RECS_MLFLOW_ARTIFACTS_DIR": str(root / "artifacts"),
        }
        python = sys.executable
        print("running the demo night and a retrain (a few minutes)...")
        subprocess.run([python, "-m", "flows.cli", "demo"], env=env, check=True,
                       capture_output=True)  # fmt: skip
        retrain = "from flows.operations import retrain_flow; retrain_flow()"
        subprocess.run([python, "-c", retrain], env=env, check=True, capture_output=True)
        import mlflow

        mlflow.set_tracking_uri(env["RECS_MLFLOW_TRACKING_URI"])
        experiment = mlflow.get_experiment_by_name("nightly-recommendations")
        assert experiment is not None
        runs = mlflow.search_runs([experiment.experiment_id], order_by=["start_time DESC"])
        run_id = str(runs.iloc[0]["run_id"])
        client = mlflow.MlflowClient()
        version = client.get_model_version_by_alias("recs-lightfm", "challenger").version
        port = _free_port()
        ui = subprocess.Popen(
            [str(Path(python).parent / "mlflow"), "ui", "--backend-store-uri",
             env["RECS_MLFLOW_TRACKING_URI"], "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_for(base, 60)
            run = f"{base}/#/experiments/{experiment.experiment_id}/runs/{run_id}"
            DOCS.mkdir(exist_ok=True)
            profile = root / "chromium"
            print("screenshots:")
            _shot(chromium, run, DOCS / "mlflow-run.png", profile)
            # (The "Model metrics" tab draws ~600 charts lazily: headless, they stay blank.)
            _shot(chromium, f"{run}/artifacts/review/learning_curve.png",
                  DOCS / "mlflow-run-learning-curve.png", profile)  # fmt: skip
            _shot(chromium, f"{run}/artifacts/review/precision_at_k.png",
                  DOCS / "mlflow-run-artifacts.png", profile)  # fmt: skip
            _shot(chromium, f"{base}/#/models/recs-lightfm/versions/{version}",
                  DOCS / "mlflow-model-version.png", profile)  # fmt: skip
        finally:
            ui.terminate()
            ui.wait(30)


if __name__ == "__main__":
    main()
