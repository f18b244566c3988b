-- item_features: one row per item_id in the catalog, with attributes, availability and
-- distinct users before $as_of. Tags are a '|'-separated list in the catalog.
with catalog as (
    select item_id, category, brand, price_band, tags, available from items
),

history as (
    select item_id, count(distinct user_id) as n_users
    from clean_events
    where event_ts < $as_of
    group by item_id
),

final as (
    select
        catalog.item_id,
        catalog.category,
        catalog.brand,
        catalog.price_band,
        string_split(coalesce(catalog.tags, ''), '|') as tags,
        coalesce(catalog.available, true) as available,
        coalesce(history.n_users, 0) as n_users
    from catalog
    left join history using (item_id)
)

select * from final order by item_id
