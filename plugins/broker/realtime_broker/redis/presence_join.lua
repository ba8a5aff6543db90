-- ARGV[4]: presence_ttl in ms; then client id and member pairs. Adds or renews each,
-- announcing the new ones. Returns how many were new.
local ttl = tonumber(ARGV[4])
local now = now_ms()
prune(now)
local added = 0
for i = 5, #ARGV, 2 do
  local client, value = ARGV[i], ARGV[i + 1]
  local known = redis.call('HGET', KEYS[1], client)
  redis.call('ZADD', KEYS[2], now + ttl, client)
  if known ~= value then
    redis.call('HSET', KEYS[1], client, value)
    if not known then
      added = added + 1
      if redis.call('HINCRBY', KEYS[3], user_of(value), 1) == 1 then
        tell('J', client, value)
      else
        tell('j', client, value)
      end
    end
  end
end
keep(ttl)
return {added, told}
