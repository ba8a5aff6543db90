-- ARGV[4]: presence_ttl in ms; then client ids. Renews those still there (never adds
-- one: a client that left meanwhile must not come back); returns the others.
local ttl = tonumber(ARGV[4])
local now = now_ms()
prune(now)
local missing = {}
for i = 5, #ARGV do
  if redis.call('ZSCORE', KEYS[2], ARGV[i]) then
    redis.call('ZADD', KEYS[2], now + ttl, ARGV[i])
  else
    table.insert(missing, ARGV[i])
  end
end
keep(ttl)
return {missing, told}
