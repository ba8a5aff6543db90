-- ARGV[4]: "stats" for {clients, users}, else the members (flattened, at most
-- ARGV[5] of them), after pruning.
prune(now_ms())
if ARGV[4] == 'stats' then
  return {{redis.call('HLEN', KEYS[1]), redis.call('HLEN', KEYS[3])}, told}
end
if redis.call('HLEN', KEYS[1]) <= tonumber(ARGV[5]) then
  return {redis.call('HGETALL', KEYS[1]), told}
end
local found = redis.call('HSCAN', KEYS[1], 0, 'COUNT', ARGV[5])
return {found[2], told}
