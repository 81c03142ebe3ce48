-- LEAVE: frees a name this node holds; publishes the Leave.
-- ARGV: 1 prefix, 2 node, 3 name key, 4 the Leave event (JSON).
-- Answers 1, or 0 when the name was not this node's.
local p, node, key = ARGV[1], ARGV[2], ARGV[3]
local cur = redis.call('HGET', p .. 'users', key)
if cur and string.sub(cur, 1, #node + 1) == node .. '\n' then
  redis.call('HDEL', p .. 'users', key)
  redis.call('HDEL', p .. 'pubkeys', key)
  redis.call('HDEL', p .. 'tokens', key)
  local seq = redis.call('INCR', p .. 'seq')
  redis.call('PUBLISH', p .. 'events', seq .. ' ' .. ARGV[4])
  return 1
end
return 0
