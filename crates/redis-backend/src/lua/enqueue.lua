-- Adds one task to a partition's stream as an entry of its own, unless the partition holds
-- its share of the queue's capacity already (counted in tasks: `<stream>:n`, which an empty
-- stream resets). Atomic, so concurrent gateways cannot overfill it.
-- KEYS[1] the partition's stream; ARGV[1] capacity of the partition; ARGV[2] the task
-- message; ARGV[3] (optional) when the task first entered the queue (ms, Redis's clock), kept
-- across requeues so that the queue-age limit still bounds it.
-- Returns the entry id, or false when full.
local n = 0
if redis.call('XLEN', KEYS[1]) > 0 then
  n = tonumber(redis.call('GET', KEYS[1] .. ':n') or '0') or 0
end
if n >= tonumber(ARGV[1]) then
  return false
end
local id
if ARGV[3] then
  id = redis.call('XADD', KEYS[1], '*', 'm', ARGV[2], 'q', ARGV[3])
else
  id = redis.call('XADD', KEYS[1], '*', 'm', ARGV[2])
end
redis.call('SET', KEYS[1] .. ':n', n + 1)
return id
