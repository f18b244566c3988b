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


def test_serving_versions_rollback_and_recommend(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines.stores.serving import ServingStore, publish_recommendations
    from tests.unit.test_serving import AT, POPULAR, recs_table

    store = ServingStore(f"sqlite:///{(data_dir / 'serving.sqlite').resolve()}")
    for version in ("1", "2"):
        publish_recommendations(
            store, recs_table(["a"], 3, version=version, run_id=f"run-{version}"), POPULAR,
            run_id=f"run-{version}", model_version=version, clock=lambda: AT,
        )  # fmt: skip
    assert main(["serving", "versions"]) == 0
    out = capsys.readouterr().out
    assert out.index("run-2") < out.index("run-1")
    assert "(live)" in out.splitlines()[1]  # run-2, the newest, under the header
    assert main(["serving", "rollback"]) == 0
    assert "serving run run-1 again (model version 1" in capsys.readouterr().out
    assert main(["recommend", "a", "--k", "2"]) == 0
    assert "   2  i2" in capsys.readouterr().out
    assert main(["recommend", "nobody", "--attribute", "gender=F"]) == 0
    assert "f1" in capsys.readouterr().out
    assert main(["serving", "rollback", "run-9"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("recs serving rollback: LookupError:")
    assert "kept: run-1 (live), run-2" in err
    assert len(err.splitlines()) == 1
    assert main(["serving", "grant-reader", "reader"]) == 1
    assert "SQLite has no roles" in capsys.readouterr().err


def test_serving_block_records_the_pair_the_score_stage_excludes(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines.stores import warehouse

    assert main(["serving", "block", "u1", "i9", "--reason", "complaint"]) == 0
    assert "blocked i9 for u1" in capsys.readouterr().out
    pairs = warehouse.blocklist(data_dir / "warehouse.duckdb")
    assert pairs.rows() == [("u1", "i9")]
