-- Send one control message (see realtime_broker.redis.control): leave its proof, then
-- PUBLISH it on the control channel. Never numbered, never kept beyond the proof.
-- Only commands the recommended ACL already grants (docs/operations.md).
-- KEYS[1]: the proof key, a hash. ARGV: the body, the control Pub/Sub channel, the
-- magic and id with its space, how long the proof lasts in ms, the command (PUBLISH, or
-- SPUBLISH under Redis Cluster, where the proof and the channel share a slot).
-- Returns how many processes heard it, or -1 if the id was taken (nothing sent).
if redis.call('HGET', KEYS[1], 'p') then
  return -1
end
redis.call('HSET', KEYS[1], 'p', redis.sha1hex(ARGV[1]))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return redis.call(ARGV[5], ARGV[2], ARGV[3] .. ARGV[1])
