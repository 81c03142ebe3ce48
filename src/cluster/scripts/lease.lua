-- LEASE: renews this node's lease, and clears the users of every node whose
-- lease has expired (publishing a Dead event for each).
-- ARGV: 1 prefix, 2 node, 3 lease in ms.
-- Answers 1 when this node had been forgotten (declared dead), else 0.
local p, node = ARGV[1], ARGV[2]
redis.call('SET', p .. 'node:' .. node, '1', 'PX', ARGV[3])
local forgotten = redis.call('SADD', p .. 'nodes', node)
for _, other in ipairs(redis.call('SMEMBERS', p .. 'nodes')) do
  if other ~= node and redis.call('EXISTS', p .. 'node:' .. other) == 0 then
    local users = redis.call('HGETALL', p .. 'users')
    for i = 1, #users, 2 do
      if string.sub(users[i + 1], 1, #other + 1) == other .. '\n' then
        redis.call('HDEL', p .. 'users', users[i])
        redis.call('HDEL', p .. 'pubkeys', users[i])
        redis.call('HDEL', p .. 'tokens', users[i])
      end
    end
    redis.call('SREM', p .. 'nodes', other)
    local seq = redis.call('INCR', p .. 'seq')
    redis.call('PUBLISH', p .. 'events', seq .. ' {"e":"dead","node":"' .. other .. '"}')
  end
end
return forgotten
