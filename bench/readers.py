"""A reader process for the serving store, shared by ``bench/serving.py`` and the concurrency
test: it looks users up until told to stop and writes what it saw."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from pipelines.stores.reader import ServingReader


def read_until_stopped(
    url: str,
    per_read: bool,
    stop: str,
    out: str,
    users: list[str],
    k: int,
    versioned_items: bool = False,
    pace: float = 0.0,
) -> None:
    """Look random ``users`` up (``k`` items) until the file ``stop`` exists, then write the
    counts and latencies to ``out``: reads, errors, empty and short lists, and (when item ids
    carry their version, ``v<version>-...``) lists mixing two versions. ``per_read`` opens a
    connection for every read, as a careless service would; otherwise one is kept. ``pace``
    seconds pass between reads (0: as fast as it can)."""
    counts: dict[str, int] = {"reads": 0, "errors": 0, "empty": 0, "short": 0, "mixed": 0}
    first_error = ""
    rng = random.Random(out)
    reader: ServingReader | None = None
    latencies: list[float] = []
    while not Path(stop).exists():
        if pace:
            time.sleep(pace)
        user = rng.choice(users)
        start = time.perf_counter()
        try:
            if per_read:
                with ServingReader(url) as once:
                    rows = once.get_recommendations(user, k)
            else:
                reader = reader or ServingReader(url)
                rows = reader.get_recommendations(user, k)
        except Exception as exc:  # counted, never fatal: the counts are the result
            counts["errors"] += 1
            first_error = first_error or f"{type(exc).__name__}: {exc}"
            continue
        latencies.append(time.perf_counter() - start)
        counts["reads"] += 1
        counts["empty"] += not rows
        counts["short"] += 0 < len(rows) < k
        if versioned_items:
            counts["mixed"] += len({r.item_id.split("-")[0] for r in rows}) > 1
    if reader is not None:
        reader.close()
    Path(out).write_text(json.dumps({**counts, "first_error": first_error, "latencies": latencies}))
