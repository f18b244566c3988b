-- popular_items: one row per segment x rank (1..$top_n): available items by distinct users in
-- the $window_days days before $as_of. Segments: 'global' and 'country:<code>'.
with recent as (
    select clean_events.user_id, clean_events.item_id
    from clean_events
    where event_ts < $as_of
      and event_ts >= $as_of - to_days(cast($window_days as integer))
),

available_items as (
    select item_id from items where coalesce(available, true)
),

scored as (
    select 'global' as segment, item_id, count(distinct user_id)::double as score
    from recent
    semi join available_items using (item_id)
    group by item_id

    union all

    select 'country:' || users.country as segment, item_id, count(distinct user_id)::double
    from recent
    inner join users using (user_id)
    semi join available_items using (item_id)
    where users.country is not null
    group by users.country, item_id
),

ranked as (
    select
        segment,
        cast(row_number() over (partition by segment order by score desc, item_id) as integer) as rank,
        item_id,
        score
    from scored
),

final as (
    select * from ranked where rank <= $top_n
)

select * from final order by segment, rank
