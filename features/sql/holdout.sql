-- holdout: one row per user_id x item_id first interacted with in [$as_of, $holdout_end),
-- for users with history before $as_of; pairs already seen before $as_of are not new.
with train as (
    select distinct user_id, item_id from clean_events where event_ts < $as_of
),

train_users as (
    select distinct user_id from train
),

future as (
    select user_id, item_id, count(*) as n_events
    from clean_events
    where event_ts >= $as_of and event_ts < $holdout_end
    group by user_id, item_id
),

final as (
    select future.user_id, future.item_id, future.n_events
    from future
    inner join train_users using (user_id)
    anti join train using (user_id, item_id)
)

select * from final order by user_id, item_id
