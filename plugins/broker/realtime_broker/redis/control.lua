-- Send one control message (see realtime_broker.redis.control): leave its proof, then
-- PUBLISH it on the control channel. Never numbered, never kept beyond the proof.
-- KEYS[1]: the proof key. ARGV: the body, the control Pub/Sub channel, the magic and
-- id with its space, how long the proof lasts in ms.
-- Returns how many processes heard it, or -1 if the id was taken (nothing sent).
if not redis.call('SET', KEYS[1], redis.sha1hex(ARGV[1]), 'PX', ARGV[4], 'NX') then
  return -1
end
return redis.call('PUBLISH', ARGV[2], ARGV[3] .. ARGV[1])
