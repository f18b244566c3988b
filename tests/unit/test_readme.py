"""The README stays true: its configuration table lists exactly the settings that exist."""

from __future__ import annotations

import re

from flows.settings import PROJECT_ROOT, Settings


def test_configuration_table_lists_every_setting() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `RECS_([A-Z_]+)` \|", table, flags=re.MULTILINE))
    assert documented == {name.upper() for name in Settings.model_fields}


def test_quickstart_shows_the_two_commands() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert "make demo" in readme
    assert "make test" in readme
