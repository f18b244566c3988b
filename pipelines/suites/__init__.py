"""Great Expectations suites (events, recommendations, catalogs) and the runner that executes
them. The gate's error lives here, free of GX imports, so the CLI can name it without paying for
importing GX."""

from __future__ import annotations

from collections.abc import Sequence


class ValidationError(RuntimeError):
    """A batch failed the gate; the message names every failed expectation."""

    def __init__(self, batch_name: str, failures: Sequence[str], hint: str = "") -> None:
        self.failures = list(failures)
        super().__init__(
            f"validation of {batch_name} failed:\n  - " + "\n  - ".join(failures) + hint
        )
