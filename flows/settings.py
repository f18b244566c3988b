"""Deployment settings: one object, read once by a flow or the CLI and passed down.

Every field is overridable as ``RECS_<NAME>`` (for example ``RECS_DATA_DIR``; nested groups as
``RECS_<GROUP>__<NAME>``, e.g. ``RECS_VALIDATION__MAX_QUARANTINE_SHARE``), or from a TOML file
named by ``RECS_CONFIG`` (default ``recs.toml`` in the working directory, if it exists).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from features.signal import SignalParams
from models.baselines import PopularityParams
from models.ease import EASEParams
from models.policy import GateParams
from models.rules import ListRules
from pipelines.sources.readers import FileSource, Source
from pipelines.stores import Stores
from pipelines.stores.tracking import Tracking
from pipelines.stores.urls import check_serving_url
from pipelines.suites.events import ValidationThresholds

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _default_sources() -> list[Source]:
    return [FileSource()]


class Settings(BaseSettings):
    """Where data lives and how the nightly run behaves."""

    model_config = SettingsConfigDict(
        env_prefix="RECS_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,  # a bad setting's message never echoes a URL's password
    )

    data_dir: Path = Field(PROJECT_ROOT / "data", description="Root of lake, warehouse, serving")
    landing_dir: Path | None = Field(None, description="Event exports + catalogs (data/landing)")
    lake_dir: Path | None = Field(None, description="Parquet lake (data/lake)")
    warehouse_path: Path | None = Field(
        None, description="DuckDB warehouse (data/warehouse.duckdb)"
    )
    serving_url: str | None = Field(
        None, description="sqlite:///path or postgresql://... (data/serving.sqlite)"
    )
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow store (sqlite:///<abs>/mlflow/mlflow.db)"
    )
    mlflow_artifacts_dir: Path = Field(PROJECT_ROOT / "mlflow" / "artifacts")
    experiment_name: str = "nightly-recommendations"
    registered_model_name: str = "recs-lightfm"
    top_k: int = Field(
        10, ge=1, le=1000, description="k of the metrics (precision@k ...) and of the gate"
    )
    serving_k: int = Field(
        100, ge=1, le=1000, description="Recommendations per user in the published lists"
    )
    serving_keep_versions: int = Field(
        7, ge=1, description="Published versions kept in the serving store for a rollback"
    )
    rules: ListRules = Field(
        default_factory=ListRules, description="What a published list may hold"
    )
    holdout_days: int = Field(7, ge=1, description="Evaluation window before as_of, in days")
    validation: ValidationThresholds = Field(
        default_factory=ValidationThresholds, description="The validation gate's thresholds"
    )
    popularity: PopularityParams = Field(
        default_factory=PopularityParams, description="What the popular lists count"
    )
    signal: SignalParams = Field(
        default_factory=SignalParams, description="How events become training signal"
    )
    use_tuned: bool = Field(
        True,
        description="Train with the latest `recs tune` study's LightFM and signal settings "
        "(warehouse tuning_runs) instead of LightFM's defaults and RECS_SIGNAL__*",
    )
    gate: GateParams = Field(default_factory=GateParams, description="When a challenger wins")
    ease: EASEParams = Field(default_factory=EASEParams, description="The EASE candidate")
    recs_ttl_hours: int = Field(36, ge=1, description="expires_at = generated_at + ttl")
    num_threads: int = Field(2, ge=1, description="LightFM training / scoring threads")
    dask_address: str | None = Field(
        None,
        description="Dask scheduler (tcp://host:8786): extract, validate, score run sharded on it",
    )
    dask_local_workers: int | None = Field(
        None, ge=1, description="Without an address: a local Dask cluster of this many workers"
    )
    dask_publish: bool = Field(
        False,
        description="With a Dask cluster and a PostgreSQL serving store: load each version over "
        "parallel connections, one per part of the lists (pays off when the database has cores "
        "to spare; slower on a 2-core machine that also hosts the database, bench/README.md)",
    )
    task_retries: int = Field(2, ge=0, description="Retries of a stage after a transient error")
    task_retry_delay_seconds: float = Field(10, ge=0, description="Wait before a retry")
    task_timeout_seconds: float = Field(7200, gt=0, description="A stage running longer fails")
    clock: datetime | None = Field(
        None,
        description="A fixed 'now' for every run (simulations: bench/soak.py); unset: wall clock",
    )
    sources: list[Source] = Field(
        default_factory=_default_sources,
        description="Event sources (default: JSON lines in <landing>/events)",
    )

    @model_validator(mode="after")
    def _fill_derived_paths(self) -> Settings:
        # Frozen model: derived defaults are filled once, here, so every reader sees one value.
        defaults: dict[str, Any] = {
            "landing_dir": self.data_dir / "landing",
            "lake_dir": self.data_dir / "lake",
            "warehouse_path": self.data_dir / "warehouse.duckdb",
            "serving_url": f"sqlite:///{(self.data_dir / 'serving.sqlite').resolve()}",
            "mlflow_tracking_uri": f"sqlite:///{(PROJECT_ROOT / 'mlflow' / 'mlflow.db').resolve()}",
        }
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        # Fail at start, not at publish after five stages: the scheme must be one we speak.
        assert self.serving_url is not None
        check_serving_url(self.serving_url)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("RECS_CONFIG", "recs.toml"))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
        )

    # Typed accessors: after validation these are never None.
    @property
    def landing(self) -> Path:
        assert self.landing_dir is not None
        return self.landing_dir

    @property
    def lake(self) -> Path:
        assert self.lake_dir is not None
        return self.lake_dir

    @property
    def warehouse(self) -> Path:
        assert self.warehouse_path is not None
        return self.warehouse_path

    @property
    def serving(self) -> str:
        assert self.serving_url is not None
        return self.serving_url

    @property
    def tracking_uri(self) -> str:
        assert self.mlflow_tracking_uri is not None
        return self.mlflow_tracking_uri

    def stores(self) -> Stores:
        """Where each store lives, for the stages."""
        return Stores(
            landing=self.landing,
            lake=self.lake,
            warehouse=self.warehouse,
            serving_url=self.serving,
            gx_root=self.data_dir,
        )

    def tracking(self) -> Tracking:
        """The MLflow store and names, for the stages."""
        return Tracking(
            tracking_uri=self.tracking_uri,
            artifacts_dir=self.mlflow_artifacts_dir,
            experiment_name=self.experiment_name,
            model_name=self.registered_model_name,
        )
