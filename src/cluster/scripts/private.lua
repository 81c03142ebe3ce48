-- PRIVATE (after deadline.lua): a private message, published when its
-- target is online anywhere.
-- ARGV: 1 prefix, 2 deadline, 3 the target's name key, 4 the Private event
-- (JSON). Answers 1, 0 when the target is offline, or -1 past the deadline.
local p = ARGV[1]
if redis.call('HEXISTS', p .. 'users', ARGV[3]) == 0 then
  return 0
end
local seq = redis.call('INCR', p .. 'seq')
redis.call('PUBLISH', p .. 'events', seq .. ' ' .. ARGV[4])
return 1
