-- The deadline check every proposal (SAY, PUBLIC_KEY, PRIVATE) starts
-- with: ARGV[2] is a time in ms of Redis's clock; past it the script does
-- nothing and answers -1.
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[2]) then
  return -1
end
