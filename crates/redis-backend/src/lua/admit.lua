-- Admits one task in one round trip. All keys share the task's partition hash tag, so this
-- runs on one cluster slot.
-- KEYS[1] the partition's stream; KEYS[2] the task's result hash; KEYS[3] (optional) the
-- dedupe entry of its input.
-- ARGV[1] capacity of the partition; ARGV[2] the task message; ARGV[3] the task id;
-- ARGV[4] created_at (ms); ARGV[5] result TTL (s); ARGV[6] dedupe TTL (ms); ARGV[7] the
-- owner (the caller's identity; empty: none).
-- Returns {'dup', existing_task_id}, {'full'} or {'ok'}.
if #KEYS == 3 then
  local existing = redis.call('SET', KEYS[3], ARGV[3], 'NX', 'GET', 'PX', ARGV[6])
  if existing then
    return {'dup', existing}
  end
end
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  if #KEYS == 3 then
    redis.call('DEL', KEYS[3])
  end
  return {'full'}
end
if ARGV[7] ~= nil and ARGV[7] ~= '' then
  redis.call('HSET', KEYS[2], 'status', 'PENDING', 'created_at', ARGV[4], 'owner', ARGV[7])
else
  redis.call('HSET', KEYS[2], 'status', 'PENDING', 'created_at', ARGV[4])
end
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('XADD', KEYS[1], '*', 'm', ARGV[2])
return {'ok'}
