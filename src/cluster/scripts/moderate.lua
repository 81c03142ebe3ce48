-- MODERATE (after deadline.lua): a moderator's action. What must outlive
-- the nodes is kept (bans, mutes, the lock), then the action is published
-- for every node to apply to its own users.
-- ARGV: 1 prefix, 2 deadline, 3 what to keep ('ban', 'unban', 'mute',
-- 'unmute', 'lock', 'unlock', or '' for nothing), 4 the field (a ban's
-- target as shown, a mute's name key, or ''), 5 the ban or mute (JSON, or
-- ''), 6 the Moderate event (JSON). Answers 1, or -1 past the deadline.
local p, keep, field = ARGV[1], ARGV[3], ARGV[4]
if keep == 'ban' then
  redis.call('HSET', p .. 'bans', field, ARGV[5])
elseif keep == 'unban' then
  redis.call('HDEL', p .. 'bans', field)
elseif keep == 'mute' then
  redis.call('HSET', p .. 'mutes', field, ARGV[5])
elseif keep == 'unmute' then
  redis.call('HDEL', p .. 'mutes', field)
elseif keep == 'lock' then
  redis.call('SET', p .. 'locked', '1')
elseif keep == 'unlock' then
  redis.call('DEL', p .. 'locked')
end
local seq = redis.call('INCR', p .. 'seq')
redis.call('PUBLISH', p .. 'events', seq .. ' ' .. ARGV[6])
return 1
