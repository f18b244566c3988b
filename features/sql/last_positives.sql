-- last_positives: leave-last-out truth for warm users the evaluation window does not reach.
-- Used only when the window [$start, $end) holds too few warm users to judge (see
-- pipelines/features.py). Users with no positive event in the window and at least two positive
-- pairs before $start (a rating below $min_rating is not one); of those, the first $max_users
-- by md5(user_id). Each keeps its latest ceil($share x pairs) positive pairs (at least one,
-- ordered by the pair's latest positive event, then item_id) as truth; the candidates then
-- train without any event on those pairs. Same columns as holdout; user_segment is 'warm';
-- new_item: no event on the item before $start apart from those on held-out pairs; truth is
-- 'last_positives'.
with positive_pairs as (
    select user_id, item_id, count(*) as n_events, max(event_ts) as last_ts
    from clean_events
    where event_ts < $start
      and (event_type <> 'rating' or coalesce(value, 0) >= $min_rating)
    group by user_id, item_id
),

in_window as (
    select distinct user_id
    from clean_events
    where event_ts >= $start
      and event_ts < $end
      and (event_type <> 'rating' or coalesce(value, 0) >= $min_rating)
),

eligible as (
    select user_id
    from positive_pairs
    anti join in_window using (user_id)
    group by user_id
    having count(*) >= 2
    order by md5(user_id), user_id
    limit $max_users
),

ranked as (
    select
        positive_pairs.*,
        row_number() over (
            partition by user_id order by last_ts desc, item_id desc
        ) as from_last,
        count(*) over (partition by user_id) as n_pairs
    from positive_pairs
    semi join eligible using (user_id)
),

held as (
    select user_id, item_id, n_events
    from ranked
    where from_last <= greatest(1, ceil(n_pairs * $share))
),

known_items as (
    select distinct item_id
    from clean_events
    anti join held using (user_id, item_id)
    where event_ts < $start
),

final as (
    select
        held.user_id,
        held.item_id,
        held.n_events,
        'warm' as user_segment,
        known_items.item_id is null as new_item,
        'last_positives' as truth
    from held
    left join known_items using (item_id)
)

select * from final order by user_id, item_id
