-- SAY (after deadline.lua): a broadcast, kept in the history.
-- ARGV: 1 prefix, 2 deadline, 3 history count (0: no history), 4 the Say
-- event (JSON). Answers 1, or -1 past the deadline.
local p = ARGV[1]
local n = tonumber(ARGV[3])
if n > 0 then
  redis.call('RPUSH', p .. 'history', ARGV[4])
  redis.call('LTRIM', p .. 'history', -n, -1)
else
  redis.call('DEL', p .. 'history')
end
local seq = redis.call('INCR', p .. 'seq')
redis.call('PUBLISH', p .. 'events', seq .. ' ' .. ARGV[4])
return 1
