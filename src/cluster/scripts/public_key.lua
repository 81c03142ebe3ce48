-- PUBLIC_KEY (after deadline.lua): a user of this node publishes a key.
-- ARGV: 1 prefix, 2 deadline, 3 node, 4 name key, 5 public key, 6 the
-- PublicKey event (JSON). Answers 1, 0 when the name is not this node's, or
-- -1 past the deadline.
local p, node, key = ARGV[1], ARGV[3], ARGV[4]
local cur = redis.call('HGET', p .. 'users', key)
if cur and string.sub(cur, 1, #node + 1) == node .. '\n' then
  redis.call('HSET', p .. 'pubkeys', key, ARGV[5])
  local seq = redis.call('INCR', p .. 'seq')
  redis.call('PUBLISH', p .. 'events', seq .. ' ' .. ARGV[6])
  return 1
end
return 0
