"""How fast the command line answers: ``recs --help`` and ``recs run nightly --help`` against a
bare ``python -c pass`` (the interpreter's own start-up), measured in the same run.

Protocol: each command runs ``--repeat`` times in a fresh process after one warm-up run (so
bytecode is compiled); the table shows the median and the worst wall time and the ratio of the
median to the reference's. Target (the night-after-night issue): ``recs --help`` under 1 s.

    .venv/bin/python -m bench.cli
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

RECS = str(Path(sys.executable).with_name("recs"))
COMMANDS = {
    "python -c pass (reference)": [sys.executable, "-c", "pass"],
    "recs --help": [RECS, "--help"],
    "recs run nightly --help": [RECS, "run", "nightly", "--help"],
    "recs run nightly --as-of bad (usage error)": [RECS, "run", "nightly", "--as-of", "bad"],
}


def _seconds(cmd: list[str], repeat: int) -> list[float]:
    subprocess.run(cmd, capture_output=True, check=False)
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=False)
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    times = {name: _seconds(cmd, args.repeat) for name, cmd in COMMANDS.items()}
    ref = statistics.median(times["python -c pass (reference)"])
    print("| command | median s | worst s | x reference |")
    print("|---|--:|--:|--:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| `{name}` | {median:.3f} | {max(values):.3f} | {median / ref:.1f} |")


if __name__ == "__main__":
    main()
