-- SYNC: (re)registers this node and all its users, and reads the room back.
-- ARGV: 1 prefix, 2 node, 3 lease in ms, 4 history count, 5 history bytes,
-- 6 an epoch (the room's, if Redis has none yet), 7 the number of the
-- last event this node saw (the room's count never goes back below it:
-- its users' clients drop a number they have seen as a repeat), then 4 per
-- user from 8 on: name key, name, public key or '', resume token hash or ''.
-- Answers {seq of its Node event, conflicting name keys, users (HGETALL),
-- public keys (HGETALL), history (oldest first), Redis's clock in ms,
-- bans (HGETALL), mutes (HGETALL), 1 if the room is locked else 0, the
-- epoch}; bans and mutes that have ended are dropped first. The epoch names
-- the room's memory on Redis: new when Redis has lost it.
local p, node = ARGV[1], ARGV[2]
redis.call('SET', p .. 'epoch', ARGV[6], 'NX')
if tonumber(redis.call('GET', p .. 'seq') or '0') < tonumber(ARGV[7]) then
  redis.call('SET', p .. 'seq', ARGV[7])
end
redis.call('SET', p .. 'node:' .. node, '1', 'PX', ARGV[3])
redis.call('SADD', p .. 'nodes', node)
local mine = {}
for i = 8, #ARGV, 4 do mine[ARGV[i]] = true end
local all = redis.call('HGETALL', p .. 'users')
for i = 1, #all, 2 do
  if string.sub(all[i + 1], 1, #node + 1) == node .. '\n' and not mine[all[i]] then
    redis.call('HDEL', p .. 'users', all[i])
    redis.call('HDEL', p .. 'pubkeys', all[i])
    redis.call('HDEL', p .. 'tokens', all[i])
  end
end
local conflicts, accepted = {}, {}
for i = 8, #ARGV, 4 do
  local key, name, pk, token = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local cur = redis.call('HGET', p .. 'users', key)
  local owner = cur and string.match(cur, '^([^\n]*)\n')
  if owner and owner ~= node and redis.call('EXISTS', p .. 'node:' .. owner) == 1 then
    table.insert(conflicts, key)
  else
    redis.call('HSET', p .. 'users', key, node .. '\n' .. name)
    if pk ~= '' then
      redis.call('HSET', p .. 'pubkeys', key, pk)
    else
      redis.call('HDEL', p .. 'pubkeys', key)
    end
    if token ~= '' then
      redis.call('HSET', p .. 'tokens', key, token)
    else
      redis.call('HDEL', p .. 'tokens', key)
    end
    table.insert(accepted, {key, name, pk})
  end
end
local seq = redis.call('INCR', p .. 'seq')
local event = cjson.encode({e = 'node', node = node, users = accepted})
redis.call('PUBLISH', p .. 'events', seq .. ' ' .. event)
-- The newest history entries that fit both the count and the byte budget.
local history, bytes = {}, 0
local count = tonumber(ARGV[4])
if count > 0 then
  local newest = redis.call('LRANGE', p .. 'history', -count, -1)
  for i = #newest, 1, -1 do
    bytes = bytes + #newest[i]
    if bytes > tonumber(ARGV[5]) then break end
    table.insert(history, 1, newest[i])
  end
end
local t = redis.call('TIME')
-- A ban's or mute's JSON has "until": Unix seconds, or null for good.
local function in_force(hash)
  local all, kept = redis.call('HGETALL', p .. hash), {}
  for i = 1, #all, 2 do
    local ok, rule = pcall(cjson.decode, all[i + 1])
    local ends = ok and type(rule) == 'table' and rule['until']
    if type(ends) == 'number' and ends <= tonumber(t[1]) then
      redis.call('HDEL', p .. hash, all[i])
    else
      table.insert(kept, all[i])
      table.insert(kept, all[i + 1])
    end
  end
  return kept
end
return {seq, conflicts, redis.call('HGETALL', p .. 'users'),
        redis.call('HGETALL', p .. 'pubkeys'), history,
        tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000),
        in_force('bans'), in_force('mutes'), redis.call('EXISTS', p .. 'locked'),
        redis.call('GET', p .. 'epoch')}
