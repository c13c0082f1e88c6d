-- Admits a gathered group of tasks in one call. Each task is handled on its own (a failure
-- answers for that task only): dedupe claim, capacity, stream entry, pending record. On a
-- cluster every key of one call shares a partition's hash tag (one slot); on a standalone
-- Redis one call may span partitions.
-- KEYS, three per task: the partition's stream, the task's result hash, the dedupe entry of
-- its input (the result key again when the task has no dedupe entry).
-- ARGV[1] capacity of one partition; ARGV[2] result TTL (ms); ARGV[3] dedupe TTL (ms); then
-- five per task: has dedupe ('1'/'0'), the task message, the task id, created_at (ms), the
-- owner ('' for none).
-- Returns one reply per task: {'ok'}, {'dup', existing_task_id}, {'full'} or {'err', why}.
local capacity = tonumber(ARGV[1])
local result_ttl = ARGV[2]
local dedupe_ttl = ARGV[3]
local lengths = {}

local function admit(stream, result, dedupe, message, id, created_at, owner)
  if dedupe then
    local existing = redis.call('GET', dedupe)
    if existing then
      -- The existing task's result lives beside this one's (same partition: ids start with
      -- their input hash's first byte). Share it while it may still succeed; a task that
      -- failed or expired leaves a stale entry, which this task takes over.
      local existing_result = string.sub(result, 1, #result - #id) .. existing
      local status = redis.call('HGET', existing_result, 'status')
      if status == 'PENDING' or status == 'SUCCESS' then
        return {'dup', existing}
      end
    end
  end
  local length = lengths[stream] or redis.call('XLEN', stream)
  if length >= capacity then
    return {'full'}
  end
  -- The entry first: a record or dedupe entry without one would be a task that never runs.
  redis.call('XADD', stream, '*', 'm', message)
  lengths[stream] = length + 1
  if owner ~= '' then
    redis.call('HSET', result, 'status', 'PENDING', 'created_at', created_at, 'owner', owner)
  else
    redis.call('HSET', result, 'status', 'PENDING', 'created_at', created_at)
  end
  redis.call('PEXPIRE', result, result_ttl)
  if dedupe then
    redis.call('SET', dedupe, id, 'PX', dedupe_ttl)
  end
  return {'ok'}
end

local replies = {}
local tasks = #KEYS / 3
for i = 0, tasks - 1 do
  local a = 4 + 5 * i
  local dedupe = nil
  if ARGV[a] == '1' then
    dedupe = KEYS[3 * i + 3]
  end
  local ok, reply = pcall(admit, KEYS[3 * i + 1], KEYS[3 * i + 2], dedupe, ARGV[a + 1],
    ARGV[a + 2], ARGV[a + 3], ARGV[a + 4])
  if ok then
    replies[i + 1] = reply
  else
    local why = reply
    if type(reply) == 'table' then
      why = reply.err or 'error'
    end
    replies[i + 1] = {'err', tostring(why)}
  end
end
return replies
