-- interactions: one row per user_id x item_id seen before $as_of.
-- weight is the implicit-feedback strength: view 1, click 2, add_to_cart 4, purchase 8,
-- rating max(value - 2, 0.5) (a 5-star rating weighs 3, a 1-star barely counts).
with events as (
    select * from clean_events where event_ts < $as_of
),

weighted as (
    select
        user_id,
        item_id,
        event_ts,
        case event_type
            when 'view' then 1.0
            when 'click' then 2.0
            when 'add_to_cart' then 4.0
            when 'purchase' then 8.0
            when 'rating' then greatest(coalesce(value, 3.0) - 2.0, 0.5)
            else 1.0
        end as event_weight
    from events
),

final as (
    select
        user_id,
        item_id,
        count(*) as n_events,
        sum(event_weight) as weight,
        max(event_ts) as last_ts
    from weighted
    group by user_id, item_id
)

select * from final order by user_id, item_id
