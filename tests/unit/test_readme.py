"""The README stays true: its configuration table lists exactly the settings that exist."""

from __future__ import annotations

import re

from pydantic import BaseModel

from flows.settings import PROJECT_ROOT, Settings


def _variables() -> set[str]:
    """Every setting as its environment variable name (nested groups as GROUP__NAME)."""
    names = set()
    for name, field in Settings.model_fields.items():
        group = field.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            names |= {f"{name}__{inner}".upper() for inner in group.model_fields}
        else:
            names.add(name.upper())
    return names


def test_configuration_table_lists_every_setting() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `RECS_([A-Z0-9_]+)` \|", table, flags=re.MULTILINE))
    assert documented == _variables()


def test_quickstart_shows_the_two_commands() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert "make demo" in readme
    assert "make test" in readme
