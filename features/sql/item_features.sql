-- item_features: one row per item_id in the catalog: every catalog attribute, tags as a list
-- (the catalog holds them '|'-separated), availability, distinct users before $as_of and the
-- item's first event before it (first_seen, null if none: the business rules' "new item").
with catalog as (
    select * from items
),

history as (
    select item_id, count(distinct user_id) as n_users, min(event_ts) as first_seen
    from clean_events
    where event_ts < $as_of
    group by item_id
),

final as (
    select
        catalog.* replace (
            string_split(coalesce(catalog.tags::varchar, ''), '|') as tags,
            coalesce(catalog.available, true) as available
        ),
        coalesce(history.n_users, 0) as n_users,
        history.first_seen
    from catalog
    left join history using (item_id)
)

select * from final order by item_id
