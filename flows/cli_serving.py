"""``recs recommend`` and ``recs serving ...``: reading the serving store, its versions, its
reader roles and the blocklist. Registered on the ``recs`` app by :mod:`flows.cli`."""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime
from typing import Annotated

import typer

serving_app = typer.Typer(
    help="The serving store: versions, rollback, reader roles, blocklist.", no_args_is_help=True
)


def recommend(
    user_id: Annotated[str, typer.Argument(help="the user's id")],
    k: Annotated[int, typer.Option("--k", min=1, help="items to show")] = 10,
    attribute: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME=VALUE", help="an unknown user's attribute: their segment's popular list"
        ),
    ] = None,
) -> int:
    """Print a user's list from the serving store, as an online service reads it (unknown
    users get the popular list of their segment, else the global one)."""
    from flows.settings import Settings
    from pipelines.stores.reader import get_recommendations

    attributes = {}
    for pair in attribute or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{pair!r}: expected NAME=VALUE", param_hint="--attribute")
        attributes[name] = value
    rows = get_recommendations(Settings().serving, user_id, k, attributes)
    if not rows:
        print(f"no recommendations for {user_id!r} and no popular list", file=sys.stderr)
        return 1
    print(f"recommendations for {user_id} ({rows[0].source}):")
    print(f"{'rank':>4}  {'item_id':<12} {'score':>10}  source")
    for row in rows:
        print(f"{row.rank:>4}  {row.item_id:<12} {row.score:>10.4f}  {row.source}")
    return 0


@serving_app.command("versions")
def serving_versions() -> None:
    """The published versions kept for a rollback, newest first."""
    from flows.settings import Settings
    from pipelines.stores.serving import ServingStore, versions

    kept = versions(ServingStore(Settings().serving))
    if not kept:
        print("no versions published yet; run `recs run nightly`")
        return
    print(f"{'run_id':<38} {'model':<10} {'users':>8} {'rows':>10}  published_at")
    for v in kept:
        live = "  (live)" if v.live else ""
        print(f"{v.run_id:<38} {v.model_version:<10} {v.n_users:>8,} {v.n_rows:>10,}  "
              f"{v.published_at}{live}")  # fmt: skip


@serving_app.command("rollback")
def serving_rollback(
    run_id: Annotated[
        str | None, typer.Argument(help="the run whose lists to serve (default: the previous)")
    ] = None,
) -> None:
    """Serve a kept earlier version again, in one swap (see `recs serving versions`)."""
    from flows.settings import Settings
    from pipelines.publish import rollback_serving
    from pipelines.stores.runlock import run_lock

    stores = Settings().stores()
    now = datetime.now(UTC)
    with run_lock(stores.warehouse, run_id=f"serving-rollback-{uuid.uuid4().hex[:8]}",
                  started_at=now):  # fmt: skip
        report = rollback_serving(stores, run_id=run_id, clock=lambda: datetime.now(UTC))
    print(
        f"serving run {report.run_id} again (model version {report.model_version}, "
        f"{report.n_rows:,} rows for {report.n_users:,} users)"
    )


@serving_app.command("grant-reader")
def serving_grant_reader(
    role: Annotated[str, typer.Argument(help="the PostgreSQL role (created if missing)")],
) -> None:
    """Create or update a read-only PostgreSQL role for online readers; every later publish
    grants it again. Set its password yourself (ALTER ROLE ... PASSWORD)."""
    from flows.settings import Settings
    from pipelines.stores.serving import ServingStore, grant_reader

    grant_reader(ServingStore(Settings().serving), role)
    print(f"role {role} may read recommendations, popular_items, similar_items and publications")


@serving_app.command("block")
def serving_block(
    user_id: Annotated[str, typer.Argument(help="the user")],
    item_id: Annotated[str, typer.Argument(help="the item never to recommend to them")],
    reason: Annotated[str, typer.Option(help="why (recorded)")],
) -> None:
    """Never recommend ITEM_ID to USER_ID again (from the next score on): a row in the
    warehouse table `blocklist`."""
    import pyarrow as pa

    from flows.settings import Settings
    from pipelines.stores import warehouse

    row = pa.table(
        {
            "user_id": [user_id],
            "item_id": [item_id],
            "reason": [reason],
            "added_at": pa.array([datetime.now(UTC)], pa.timestamp("us", tz="UTC")),
        }
    )
    with warehouse.connect(Settings().warehouse) as con:
        warehouse.append(con, "blocklist", row)
    print(f"blocked {item_id} for {user_id}; the next score run leaves it out")
