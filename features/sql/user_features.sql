-- user_features: one row per user_id in the catalog or with events before $as_of.
-- Every catalog attribute (null for users missing from the catalog) plus history counts and an
-- activity band.
with history as (
    select user_id, count(*) as n_events, count(distinct item_id) as n_items
    from clean_events
    where event_ts < $as_of
    group by user_id
),

catalog as (
    select * from users
),

joined as (
    select
        coalesce(catalog.user_id, history.user_id) as user_id,
        catalog.* exclude (user_id),
        coalesce(history.n_events, 0) as n_events,
        coalesce(history.n_items, 0) as n_items
    from catalog
    full outer join history on catalog.user_id = history.user_id
),

final as (
    select
        *,
        case
            when n_events = 0 then 'none'
            when n_events < 10 then 'low'
            when n_events < 50 then 'mid'
            else 'high'
        end as activity_band
    from joined
)

select * from final order by user_id
