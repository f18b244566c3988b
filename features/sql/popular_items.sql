-- popular_items: one row per segment x rank (1..$top_n): available items by distinct users in
-- the $window_days days before $as_of. Segments: 'global', and '<attribute>:<value>' for every
-- user attribute with at most 50 distinct values (country:US, age_band:25-34, ...).
with recent as (
    select clean_events.user_id, clean_events.item_id
    from clean_events
    where event_ts < $as_of
      and event_ts >= $as_of - to_days(cast($window_days as integer))
),

available_items as (
    select item_id from items where coalesce(available, true)
),

user_attributes as (
    unpivot (select user_id, columns(* exclude (user_id))::varchar from users)
    on columns(* exclude (user_id))
    into name attribute value attribute_value
),

segment_attributes as (
    select attribute
    from user_attributes
    group by attribute
    having count(distinct attribute_value) <= 50
),

user_segments as (
    select user_id, attribute || ':' || attribute_value as segment
    from user_attributes
    semi join segment_attributes using (attribute)
),

scored as (
    select 'global' as segment, item_id, count(distinct user_id)::double as score
    from recent
    semi join available_items using (item_id)
    group by item_id

    union all

    select user_segments.segment, item_id, count(distinct user_id)::double
    from recent
    inner join user_segments using (user_id)
    semi join available_items using (item_id)
    group by user_segments.segment, item_id
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
