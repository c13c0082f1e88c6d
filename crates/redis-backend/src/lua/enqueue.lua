-- Adds a task to a partition's stream unless the stream holds its share of the queue's
-- capacity already. Atomic, so concurrent gateways cannot overfill it.
-- KEYS[1] the partition's stream; ARGV[1] capacity of the partition; ARGV[2] the task message.
-- Returns the entry id, or false when full.
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  return false
end
return redis.call('XADD', KEYS[1], '*', 'm', ARGV[2])
