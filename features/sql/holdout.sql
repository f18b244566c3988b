-- holdout: the evaluation window's truth. One row per user_id x item_id with a positive event in
-- [$start, $end) (a rating below $min_rating is not one) on a pair the user had no event on
-- before $start. user_segment: 'warm' when the user has an event before $start, else 'cold'
-- (scored from attributes alone); new_item: nobody had an event on the item before $start;
-- truth: 'window' (rows of last_positives.sql, added to a thin window, say 'last_positives').
with before_window as (
    select distinct user_id, item_id from clean_events where event_ts < $start
),

warm_users as (
    select distinct user_id from before_window
),

known_items as (
    select distinct item_id from before_window
),

in_window as (
    select user_id, item_id, count(*) as n_events
    from clean_events
    where event_ts >= $start
      and event_ts < $end
      and (event_type <> 'rating' or coalesce(value, 0) >= $min_rating)
    group by user_id, item_id
),

final as (
    select
        in_window.user_id,
        in_window.item_id,
        in_window.n_events,
        case when warm_users.user_id is null then 'cold' else 'warm' end as user_segment,
        known_items.item_id is null as new_item,
        'window' as truth
    from in_window
    left join warm_users using (user_id)
    left join known_items using (item_id)
    anti join before_window using (user_id, item_id)
)

select * from final order by user_id, item_id
