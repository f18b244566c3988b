"""The CLI commands that need no Prefect: generate, import, recommend before any publish."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import main


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RECS_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def test_generate_writes_a_preset_ending_where_asked(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", "--preset", "tiny", "--start", "2026-01-01", "--seed", "3"]) == 0
    files = sorted(p.name for p in (data_dir / "landing" / "events").iterdir())
    assert files[0] == "events-2026-01-01.jsonl.gz"
    assert files[-1] == "events-2026-01-14.jsonl.gz"
    assert "2026-01-01 .. 2026-01-14, seed 3" in capsys.readouterr().out


def test_import_movielens_replaces_landing_events(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["generate", "--preset", "tiny", "--start", "2026-01-01"])
    src = tmp_path / "ml"
    src.mkdir()
    (src / "ratings.dat").write_text("1::10::5::978300760\n")
    (src / "users.dat").write_text("1::F::1::10::48067\n")
    (src / "movies.dat").write_text("10::X (1995)::Drama\n")
    assert main(["import", "movielens", str(src)]) == 0
    assert [p.name for p in (data_dir / "landing" / "events").iterdir()] == [
        "ml-1m-ratings.jsonl.gz"
    ]
    assert "imported ml-1m: 1 events" in capsys.readouterr().out


def test_import_of_a_wrong_folder_exits_1_with_a_message(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import", "movielens", str(tmp_path)]) == 1
    assert "not a MovieLens folder" in capsys.readouterr().err


def test_recommend_before_any_publish_says_what_to_run(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["recommend", "u1"]) == 1
    assert "run `recs run nightly`" in capsys.readouterr().err
