-- interactions: one row per user_id x item_id with an event before $as_of.
-- weight is the implicit-feedback strength, from the signal settings (features/signal.py): each
-- event weighs its type's weight ($weight_types -> $weight_values; unlisted types 1), a rating
-- weighs (value - $min_rating + 1) times that and nothing below $min_rating; only the latest
-- $max_repeats events of one type on a pair count; with $half_life_days > 0 an event's weight
-- halves every half-life before $as_of. positive: the pair has weight > 0 (a training positive);
-- every pair, positive or not, is "already seen".
with events as (
    select * from clean_events where event_ts < $as_of
),

type_weights as (
    select
        unnest(cast($weight_types as varchar[])) as event_type,
        unnest(cast($weight_values as double[])) as type_weight
),

ranked as (
    select
        user_id,
        item_id,
        event_type,
        event_ts,
        value,
        row_number() over (
            partition by user_id, item_id, event_type order by event_ts desc, event_id
        ) as repeat_rank
    from events
),

weighted as (
    select
        ranked.user_id,
        ranked.item_id,
        ranked.event_ts,
        ranked.repeat_rank,
        coalesce(type_weights.type_weight, 1.0)
        * case
            when ranked.event_type <> 'rating' then 1.0
            when coalesce(ranked.value, 0) >= $min_rating then ranked.value - $min_rating + 1.0
            else 0.0
        end
        * case
            when $half_life_days > 0
                then pow(0.5, epoch($as_of - ranked.event_ts) / 86400.0 / $half_life_days)
            else 1.0
        end as event_weight
    from ranked
    left join type_weights using (event_type)
),

final as (
    select
        user_id,
        item_id,
        count(*) as n_events,
        coalesce(sum(event_weight) filter (where repeat_rank <= $max_repeats), 0.0) as weight,
        max(event_ts) as last_ts,
        coalesce(sum(event_weight) filter (where repeat_rank <= $max_repeats), 0.0) > 0
            as positive
    from weighted
    group by user_id, item_id
)

select * from final order by user_id, item_id
