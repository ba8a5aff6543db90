-- Number one publication and PUBLISH it, in one step (see realtime_broker.redis.broker).
-- KEYS: the channel's numbering hash, the nodes hash, the channel's history stream.
-- ARGV: kind+body, a new epoch if the channel has none, MAGIC, the Pub/Sub channel
-- (not a key), "1" if the publishing process listens to the channel, META_TTL, the
-- history size (0: keeps none), the history TTL in ms.
-- Returns {receivers, the nodes hash flattened}: one round trip per publication.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  -- A history left from a numbering Redis lost belongs to another epoch.
  redis.call('DEL', KEYS[3])
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local receivers = redis.call('PUBLISH', ARGV[4], ARGV[3] .. epoch .. ' ' .. seq .. ' ' .. ARGV[1])
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
end
return {receivers, redis.call('HGETALL', KEYS[2])}
