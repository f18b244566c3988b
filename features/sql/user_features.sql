-- user_features: one row per user_id in the catalog or with events before $as_of.
-- Catalog attributes (null for users missing from the catalog) plus an activity band.
with history as (
    select user_id, count(*) as n_events, count(distinct item_id) as n_items
    from clean_events
    where event_ts < $as_of
    group by user_id
),

catalog as (
    select user_id, country, age_band, device from users
),

joined as (
    select
        user_id,
        catalog.country,
        catalog.age_band,
        catalog.device,
        coalesce(history.n_events, 0) as n_events,
        coalesce(history.n_items, 0) as n_items
    from catalog
    full outer join history using (user_id)
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
