-- Adds a task to a partition's stream unless the stream holds its share of the queue's
-- capacity already. Atomic, so concurrent gateways cannot overfill it.
-- KEYS[1] the partition's stream; ARGV[1] capacity of the partition; ARGV[2] the task
-- message; ARGV[3] (optional) when the task first entered the queue (ms, Redis's clock), kept
-- across requeues so that the queue-age limit still bounds it.
-- Returns the entry id, or false when full.
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  return false
end
if ARGV[3] then
  return redis.call('XADD', KEYS[1], '*', 'm', ARGV[2], 'q', ARGV[3])
end
return redis.call('XADD', KEYS[1], '*', 'm', ARGV[2])
