-- CLAIM: gives a name to one of this node's connections, unless another
-- live node holds it; publishes the Join.
-- ARGV: 1 prefix, 2 node, 3 name key, 4 name, 5 the Join event (JSON),
-- 6 the session's resume token hash ('' if it has none).
-- Answers 1 (granted), or {holder's name, 1 if held by this node else 0}.
local p, node, key = ARGV[1], ARGV[2], ARGV[3]
local cur = redis.call('HGET', p .. 'users', key)
if cur then
  local owner, name = string.match(cur, '^([^\n]*)\n(.*)$')
  if owner == node then
    return {name, 1}
  end
  if redis.call('EXISTS', p .. 'node:' .. owner) == 1 then
    return {name, 0}
  end
end
redis.call('HSET', p .. 'users', key, node .. '\n' .. ARGV[4])
redis.call('HDEL', p .. 'pubkeys', key)
if ARGV[6] ~= '' then
  redis.call('HSET', p .. 'tokens', key, ARGV[6])
else
  redis.call('HDEL', p .. 'tokens', key)
end
local seq = redis.call('INCR', p .. 'seq')
redis.call('PUBLISH', p .. 'events', seq .. ' ' .. ARGV[5])
return 1
