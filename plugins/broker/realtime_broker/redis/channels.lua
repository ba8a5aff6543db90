-- Write a process's channel map and info (see realtime_broker.redis.cluster).
-- KEYS: the process's channel map, its info. ARGV: the TTL, "1" to start the map
-- afresh, "1" if the map must already exist (else nothing is written and 0 returned:
-- Redis lost it), the number of info items, of items to set, then the info's
-- field/value pairs, the map's, and the channels to remove. One EVALSHA: atomic,
-- whatever its size.
-- Fields per HSET or HDEL: Lua's unpack has a stack limit.
local chunk = 1000
local ttl = ARGV[1]
if ARGV[2] == '1' then
  redis.call('DEL', KEYS[1])
elseif ARGV[3] == '1' and redis.call('EXPIRE', KEYS[1], ttl) == 0 then
  return 0
end
local first = 6
local last = first + tonumber(ARGV[4]) - 1
redis.call('HSET', KEYS[2], unpack(ARGV, first, last))
first = last + 1
last = first + tonumber(ARGV[5]) - 1
for i = first, last, 2 * chunk do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 2 * chunk - 1, last)))
end
for i = last + 1, #ARGV, chunk do
  redis.call('HDEL', KEYS[1], unpack(ARGV, i, math.min(i + chunk - 1, #ARGV)))
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
return 1
