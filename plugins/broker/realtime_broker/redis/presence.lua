-- Shared by the presence scripts, which start with it (see realtime_broker.redis.presence).
-- KEYS: members hash, expiry sorted set, users hash.
-- ARGV[1..3]: "1" to announce joins and leaves (PUBLISH; "s": SPUBLISH, under Redis
-- Cluster), the Pub/Sub channel, PRESENCE_MAGIC.
-- Every script returns {its result, told}: told lists the user-level joins and leaves
-- ("J"/"L" messages) this call made, announced or not, so the caller alone can act on
-- them: each is decided by exactly one call, on one process.
local announce, pubsub, magic = ARGV[1] ~= '0', ARGV[2], ARGV[3]
local publish = ARGV[1] == 's' and 'SPUBLISH' or 'PUBLISH'
local told = {}
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function user_of(value)
  local n, at = string.match(value, '^(%d+):()')
  return string.sub(value, at, at + tonumber(n) - 1)
end
local function tell(kind, client, value)
  local message = magic .. kind .. #client .. ':' .. client .. value
  if kind == 'J' or kind == 'L' then
    table.insert(told, message)
  end
  if announce then
    redis.call(publish, pubsub, message)
  end
end
local function remove(client)
  local value = redis.call('HGET', KEYS[1], client)
  redis.call('ZREM', KEYS[2], client)
  if not value then
    return
  end
  redis.call('HDEL', KEYS[1], client)
  local user = user_of(value)
  local left = redis.call('HINCRBY', KEYS[3], user, -1)
  if left <= 0 then
    redis.call('HDEL', KEYS[3], user)
    tell('L', client, value)
  else
    tell('l', client, value)
  end
end
local function keep(ttl)
  -- Twice the TTL after the last renewal: gone once no process is left to prune it.
  for i = 1, 3 do
    redis.call('PEXPIRE', KEYS[i], 2 * ttl)
  end
end
local function prune(now)
  -- Members whose process stopped renewing them: gone, each leave told once.
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
  for _, client in ipairs(expired) do
    remove(client)
  end
end
