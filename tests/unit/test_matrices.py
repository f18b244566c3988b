from __future__ import annotations

import numpy as np
import polars as pl

from features.matrices import feature_matrix, feature_tokens, pair_indices, training_matrices


def test_tokens_skip_nulls_explode_lists_and_add_identity_for_warm_ids() -> None:
    frame = pl.DataFrame(
        {"item_id": ["i1", "i2"], "category": ["books", None], "tags": [["a", "b"], [""]]}
    )
    got = feature_tokens(frame, "item_id", ["category"], ["tags"], warm_ids=pl.Series(["i2"]))
    assert got.rows() == [(0, "category=books"), (0, "tags=a"), (0, "tags=b"), (1, "id=i2")]


def test_feature_rows_sum_to_one_and_ignore_unknown_tokens() -> None:
    tokens = pl.DataFrame({"row": [0, 0, 1, 1], "token": ["a", "b", "b", "zzz"]})
    m = feature_matrix(tokens.cast({"row": pl.UInt32}), 3, pl.Series(["a", "b"]))
    assert m.toarray().tolist() == [[0.5, 0.5], [0.0, 1.0], [0.0, 0.0]]


def test_training_matrices_align_ids_and_weights() -> None:
    users = pl.DataFrame({"user_id": ["u1", "u2", "u3"], "country": ["US", "DE", "US"],
                          "age_band": [None] * 3, "device": [None] * 3})  # fmt: skip
    items = pl.DataFrame({"item_id": ["i1", "i2"], "category": ["x", "y"], "brand": [None, None],
                          "price_band": [None, None], "tags": [[], []]})  # fmt: skip
    inter = pl.DataFrame({"user_id": ["u2", "u1", "zz"], "item_id": ["i2", "i2", "i1"],
                          "weight": [1.0, 7.0, 1.0]})  # fmt: skip
    m = training_matrices(inter, users, items)
    assert m.interactions.toarray().tolist() == [[0, 1], [0, 1], [0, 0]]
    np.testing.assert_allclose(m.weights.toarray()[0, 1], np.log1p(7.0), rtol=1e-6)
    # u3 has no history: attributes only, no identity token
    assert "id=u3" not in m.user_vocabulary.to_list()
    assert m.user_features.shape == (3, m.user_vocabulary.len())
    coded = pair_indices(inter, m.user_ids, m.item_ids)
    assert coded.height == 2  # the unknown user is dropped


def test_training_matrices_do_not_depend_on_input_row_order() -> None:
    """LightFM visits pairs in stored order: the same rows in another order must give the same
    matrices, or a rerun on the same data trains another model."""
    users = pl.DataFrame(
        {"user_id": [f"u{k}" for k in range(5)], "country": ["US", "DE"] * 2 + ["US"]}
    )
    items = pl.DataFrame(
        {"item_id": [f"i{k}" for k in range(4)], "tags": [["a"], ["b"], [], ["a"]]}
    )
    inter = pl.DataFrame({"user_id": ["u3", "u0", "u1", "u0", "u4"],
                          "item_id": ["i1", "i3", "i2", "i0", "i1"],
                          "weight": [1.0, 2.0, 3.0, 4.0, 5.0]})  # fmt: skip
    a = training_matrices(inter, users, items)
    b = training_matrices(inter.reverse(), users, items)
    for name in ("interactions", "weights"):
        ma, mb = getattr(a, name), getattr(b, name)
        assert ma.row.tolist() == mb.row.tolist()
        assert ma.col.tolist() == mb.col.tolist()
        assert ma.data.tolist() == mb.data.tolist()
    assert a.interactions.row.tolist() == [0, 0, 1, 3, 4]
    assert (a.user_features - b.user_features).count_nonzero() == 0
