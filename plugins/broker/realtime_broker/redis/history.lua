-- Read a channel's position and history together, atomically.
-- KEYS: the channel's numbering hash, its history stream. ARGV: the first id (XRANGE
-- syntax), the last, COUNT (0: none), "1" to read newest first.
-- Returns {epoch, last number, entries}. Writes nothing: a channel never published
-- in is offset 0 in the empty epoch.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  return {'', 0, {}}
end
local top = redis.call('HGET', KEYS[1], 'seq') or '0'
local entries = {}
if ARGV[3] ~= '0' then
  if ARGV[4] == '1' then
    entries = redis.call('XREVRANGE', KEYS[2], ARGV[2], ARGV[1], 'COUNT', ARGV[3])
  else
    entries = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[2], 'COUNT', ARGV[3])
  end
end
return {epoch, top, entries}
