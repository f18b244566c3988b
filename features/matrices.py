"""LightFM inputs: id indexes, the interaction matrix and normalised feature matrices.

Built with Polars and scipy directly (``lightfm.data.Dataset`` iterates in Python and is slow on
millions of rows). Feature tokens are ``<column>=<value>``; an entity with training history also
gets its identity token ``id=<id>``. Entities without history get attribute tokens only, so their
representation comes from what they share with others (cold start) instead of an untrained
identity embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from features.contracts import C

ID_TOKEN = "id="


def attribute_columns(frame: pl.DataFrame, id_column: str) -> tuple[list[str], list[str]]:
    """(categorical string columns, list-of-string columns) usable as features.

    A string column is categorical when it has at most max(50, 20% of rows) distinct values:
    titles, names and other near-unique text would only act as noisy identity features.
    """
    limit = max(50, frame.height // 5)
    categorical = [
        c for c, t in frame.schema.items()
        if c != id_column and t == pl.String and frame[c].n_unique() <= limit
    ]  # fmt: skip
    lists = [c for c, t in frame.schema.items() if t == pl.List(pl.String)]
    return categorical, lists


def feature_tokens(
    frame: pl.DataFrame,
    id_column: str,
    attributes: Sequence[str],
    list_attributes: Sequence[str] = (),
    warm_ids: pl.Series | None = None,
) -> pl.DataFrame:
    """Long frame of (row, token): one row per entity row x feature token.

    ``row`` is the entity's position in ``frame``. Null attribute values give no token.
    """
    indexed = frame.with_row_index("row")
    parts = [
        indexed.select(
            "row", token=pl.lit(f"{column}=") + pl.col(column).cast(pl.String)
        ).drop_nulls()
        for column in attributes
        if column in frame.columns
    ]
    for column in list_attributes:
        if column in frame.columns:
            parts.append(
                indexed.select("row", token=pl.col(column))
                .explode("token")
                .filter(pl.col("token").is_not_null() & (pl.col("token") != ""))
                .select("row", token=pl.lit(f"{column}=") + pl.col("token"))
            )
    if warm_ids is not None:
        parts.append(
            indexed.filter(pl.col(id_column).is_in(warm_ids.implode())).select(
                "row", token=pl.lit(ID_TOKEN) + pl.col(id_column)
            )
        )
    if not parts:
        return pl.DataFrame(schema={"row": pl.UInt32, "token": pl.String})
    return pl.concat(parts).sort("row", "token")


def feature_matrix(tokens: pl.DataFrame, n_rows: int, vocabulary: pl.Series) -> sp.csr_matrix:
    """Rows normalised to sum 1 (as ``lightfm.data.Dataset(normalize=True)``); tokens outside
    ``vocabulary`` are ignored."""
    vocab = pl.DataFrame({"token": vocabulary}).with_row_index("col")
    # Sorted: Polars joins do not keep row order, and LightFM sums features in stored order.
    coded = tokens.join(vocab, on="token", how="inner").sort("row", "col")
    rows = coded["row"].to_numpy().astype(np.int32)
    cols = coded["col"].to_numpy().astype(np.int32)
    counts = np.bincount(rows, minlength=n_rows).astype(np.float32)
    data = 1.0 / counts[rows] if rows.size else np.empty(0, np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(n_rows, vocabulary.len()), dtype=np.float32)


@dataclass(frozen=True)
class TrainingMatrices:
    """Everything LightFM's ``fit`` takes, and the ids behind each row and column."""

    user_ids: pl.Series
    item_ids: pl.Series
    interactions: sp.coo_matrix  # users x items, 1 where the pair interacted
    weights: sp.coo_matrix  # same sparsity, sample weights
    user_features: sp.csr_matrix
    item_features: sp.csr_matrix
    user_vocabulary: pl.Series
    item_vocabulary: pl.Series


def pair_indices(pairs: pl.DataFrame, user_ids: pl.Series, item_ids: pl.Series) -> pl.DataFrame:
    """Map (user_id, item_id[, ...]) pairs to (u, i) positions; unknown ids are dropped."""
    users = pl.DataFrame({C.user_id: user_ids}).with_row_index("u")
    items = pl.DataFrame({C.item_id: item_ids}).with_row_index("i")
    return pairs.join(users, on=C.user_id, how="inner").join(items, on=C.item_id, how="inner")


def training_matrices(
    interactions: pl.DataFrame, user_features: pl.DataFrame, item_features: pl.DataFrame
) -> TrainingMatrices:
    """Matrices for LightFM from the feature tables.

    Args:
        interactions: one row per user_id x item_id with ``weight`` (features/sql/interactions.sql).
        user_features: one row per user_id with attributes (features/sql/user_features.sql).
        item_features: one row per item_id with attributes (features/sql/item_features.sql).
    """
    user_ids = user_features[C.user_id]
    item_ids = item_features[C.item_id]
    # Sorted by position: Polars joins do not keep row order, and LightFM visits the pairs in
    # stored order (shuffled by its seed), so an unsorted matrix makes training irreproducible.
    coded = pair_indices(interactions, user_ids, item_ids).sort("u", "i")
    u = coded["u"].to_numpy().astype(np.int32)
    i = coded["i"].to_numpy().astype(np.int32)
    shape = (user_ids.len(), item_ids.len())
    # Weights are heavy-tailed (a purchase weighs 8 views); log1p keeps one pair from dominating.
    w = np.log1p(coded[C.weight].to_numpy()).astype(np.float32)
    interactions_m = sp.coo_matrix((np.ones_like(w), (u, i)), shape=shape)
    weights_m = sp.coo_matrix((w, (u, i)), shape=shape)
    warm_users = interactions[C.user_id].unique()
    warm_items = interactions[C.item_id].unique()
    user_cat, user_lists = attribute_columns(user_features, C.user_id)
    item_cat, item_lists = attribute_columns(item_features, C.item_id)
    utok = feature_tokens(user_features, C.user_id, user_cat, user_lists, warm_ids=warm_users)
    itok = feature_tokens(item_features, C.item_id, item_cat, item_lists, warm_ids=warm_items)
    uvocab = utok["token"].unique().sort()
    ivocab = itok["token"].unique().sort()
    return TrainingMatrices(
        user_ids=user_ids,
        item_ids=item_ids,
        interactions=interactions_m,
        weights=weights_m,
        user_features=feature_matrix(utok, user_ids.len(), uvocab),
        item_features=feature_matrix(itok, item_ids.len(), ivocab),
        user_vocabulary=uvocab,
        item_vocabulary=ivocab,
    )
