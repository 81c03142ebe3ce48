-- RESUME: gives the session holding a name to one of this node's
-- connections if the token is that session's (publishing the Resume:
-- nobody leaves, nobody joins); a name nobody live holds is claimed as by
-- CLAIM (publishing a Join).
-- ARGV: 1 prefix, 2 node, 3 name key, 4 name, 5 the token's hash, 6 the
-- new session's token hash (if the name is free), 7 '1' if the room's lock
-- keeps a new session out, 8 the Resume event (JSON), 9 the Join event.
-- Answers 1 (resumed), 2 (claimed afresh), 0 (held, another token), or 3
-- (free, but the room is locked).
local p, node, key = ARGV[1], ARGV[2], ARGV[3]
local cur = redis.call('HGET', p .. 'users', key)
if cur then
  local owner, name = string.match(cur, '^([^\n]*)\n(.*)$')
  if owner == node or redis.call('EXISTS', p .. 'node:' .. owner) == 1 then
    if redis.call('HGET', p .. 'tokens', key) ~= ARGV[5] then
      return 0
    end
    redis.call('HSET', p .. 'users', key, node .. '\n' .. name)
    local seq = redis.call('INCR', p .. 'seq')
    redis.call('PUBLISH', p .. 'events', seq .. ' ' .. ARGV[8])
    return 1
  end
end
if ARGV[7] == '1' and redis.call('EXISTS', p .. 'locked') == 1 then
  return 3
end
redis.call('HSET', p .. 'users', key, node .. '\n' .. ARGV[4])
redis.call('HDEL', p .. 'pubkeys', key)
if ARGV[6] ~= '' then
  redis.call('HSET', p .. 'tokens', key, ARGV[6])
else
  redis.call('HDEL', p .. 'tokens', key)
end
local seq = redis.call('INCR', p .. 'seq')
redis.call('PUBLISH', p .. 'events', seq .. ' ' .. ARGV[9])
return 2
