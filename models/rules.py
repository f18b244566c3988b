"""Business rules on the published lists: categories never shown, a cap per category, a boost
for new items. They act inside the top-K kernel's candidate set (:mod:`models.scoring`), so a
list stays K long when the catalog allows; a per-user blocklist is an exclusion like "already
seen" (the warehouse table ``blocklist``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from features.contracts import C
from models.scoring import KernelRules


class ListRules(BaseModel):
    """What a published list may hold (settings: ``RECS_RULES__*``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    category_column: str = Field(
        "category", description="item attribute the category rules read (absent: no rules)"
    )
    excluded_categories: list[str] = Field(
        default_factory=list, description="items of these categories are never recommended"
    )
    max_per_category: int | None = Field(
        None, ge=1, description="at most this many items of one category per list (None: no cap)"
    )
    new_item_days: int | None = Field(
        None, ge=1, description="an item first seen within these days before as_of is new"
    )
    new_item_boost: float = Field(
        0.0, description="added to a new item's score (in the serving candidate's score units)"
    )


@dataclass(frozen=True)
class ItemRules:
    """The rules resolved over a catalog as of one night: one row per item with its category
    code (-1: none) and boost, and the items a rule removes."""

    table: pl.DataFrame  # item_id, category_code (Int32), boost (Float32)
    excluded_items: pl.Series
    max_per_category: int

    def aligned(self, item_ids: pl.Series) -> KernelRules:
        """The rules in a model's item order, for the kernel."""
        rows = pl.DataFrame({C.item_id: item_ids}).join(
            self.table, on=C.item_id, how="left", maintain_order="left"
        )
        boost = rows["boost"].fill_null(0.0).to_numpy().astype(np.float32)
        codes = rows["category_code"].fill_null(-1).to_numpy().astype(np.int32)
        return KernelRules(
            boost=boost if boost.any() else None,
            category=codes if self.max_per_category else None,
            max_per_category=self.max_per_category,
        )


def item_rules(items: pl.DataFrame, rules: ListRules, as_of: datetime) -> ItemRules:
    """Resolve ``rules`` over ``items`` (item_features: ``item_id``, the category column,
    ``first_seen``)."""
    column = rules.category_column
    category = (
        items[column].cast(pl.String)
        if column in items.columns
        else pl.Series([None] * items.height, dtype=pl.String)
    )
    codes = (category.rank("dense") - 1).cast(pl.Int32).fill_null(-1)  # 0..n_categories-1
    boost = pl.Series(np.zeros(items.height, np.float32))
    if rules.new_item_days is not None and rules.new_item_boost and "first_seen" in items.columns:
        since = as_of - timedelta(days=rules.new_item_days)
        new = items["first_seen"].fill_null(as_of) >= since
        boost = pl.Series(np.where(new.to_numpy(), rules.new_item_boost, 0.0).astype(np.float32))
    table = pl.DataFrame(
        {C.item_id: items[C.item_id], "category_code": codes, "boost": boost.cast(pl.Float32)}
    )
    excluded = items[C.item_id].filter(category.is_in(rules.excluded_categories).fill_null(False))
    return ItemRules(table, excluded, rules.max_per_category or 0)
