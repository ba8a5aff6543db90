-- Number one publication and PUBLISH it, in one step (see realtime_broker.redis.broker).
-- KEYS: the channel's numbering hash, the nodes hash, the channel's history stream,
-- and with an idempotency key, where the channel keeps that key's result.
-- ARGV: kind+body, a new epoch if the channel has none, MAGIC, the Pub/Sub channel
-- (not a key), "1" if the publishing process listens to the channel, META_TTL, the
-- history size (0: keeps none), the history TTL in ms, the idempotency result's TTL in
-- ms (0: no key), the command (PUBLISH; SPUBLISH under Redis Cluster, where the nodes
-- hash is in another slot: then KEYS[2] is the numbering again, not read, and the
-- nodes come back empty).
-- Returns {receivers, the nodes hash flattened, epoch, offset}: one round trip per
-- publication; receivers is -1 for a key already seen, with its first epoch and offset
-- (nothing published).
if ARGV[9] ~= '0' then
  -- A hash, not a string: HGET and HSET are what the recommended ACL grants.
  local seen = redis.call('HGET', KEYS[4], 'r')
  if seen then
    local space = string.find(seen, ' ', 1, true)
    return {-1, {}, string.sub(seen, 1, space - 1), tonumber(string.sub(seen, space + 1))}
  end
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  -- A history left from a numbering Redis lost belongs to another epoch.
  redis.call('DEL', KEYS[3])
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local receivers = redis.call(ARGV[10], ARGV[4], ARGV[3] .. epoch .. ' ' .. seq .. ' ' .. ARGV[1])
if receivers == 0 and ARGV[5] == '1' then
  -- The publisher listens, yet nobody heard it: its own subscription is down, and it
  -- is told the publication failed, so it must leave no gap (nor a new key).
  if seq == 1 then
    redis.call('DEL', KEYS[1])
  else
    redis.call('HINCRBY', KEYS[1], 'seq', -1)
  end
else
  if ARGV[7] ~= '0' then
    -- The channel keeps history: the same number is the entry's id, so history and
    -- live delivery share one order and one numbering.
    redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[7], seq .. '-1', 'p', ARGV[1])
    redis.call('PEXPIRE', KEYS[3], ARGV[8])
  end
  if seq % 64 == 1 then
    -- Heard, or by nobody listening right now: numbered either way, so that a process
    -- whose subscription was down finds the gap. Kept alive now and then (every time
    -- would cost Redis a sixth more per publication).
    redis.call('EXPIRE', KEYS[1], ARGV[6])
  end
  if ARGV[9] ~= '0' then
    -- Published: a retry with the same key within the window gets this answer again.
    redis.call('HSET', KEYS[4], 'r', epoch .. ' ' .. seq)
    redis.call('PEXPIRE', KEYS[4], ARGV[9])
  end
end
local nodes = {}
if ARGV[10] == 'PUBLISH' then
  nodes = redis.call('HGETALL', KEYS[2])
end
return {receivers, nodes, epoch, seq}
