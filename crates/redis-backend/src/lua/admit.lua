-- Admits a gathered group of tasks in one call. Each task is handled on its own (a failure
-- answers for that task only): dedupe claim, capacity, stream entry, pending record. One call
-- serves every partition of one node (see topology.rs): KEYS[1], a key of one of them, routes
-- it; the keys of the tasks come as arguments (a task's keys share its partition's slot). A
-- key another node serves fails that task alone. Records are single strings (see record.rs).
-- ARGV[1] capacity of one partition; ARGV[2] record TTL (ms); ARGV[3] dedupe TTL (ms); then
-- six per task: the partition's stream, the task's record, the dedupe entry of its input (''
-- for none), the task message, the task id, its pending record.
-- Returns one reply per task: {'ok'}, {'dup', existing_task_id}, {'full'} or {'err', why}.
local capacity = tonumber(ARGV[1])
local record_ttl = ARGV[2]
local dedupe_ttl = ARGV[3]
local lengths = {}

local function admit(stream, record, dedupe, message, id, pending)
  if dedupe then
    -- Claim the input, or learn which task holds it, in one command.
    local existing = redis.call('SET', dedupe, id, 'NX', 'GET', 'PX', dedupe_ttl)
    if existing then
      -- The existing task's record lives beside this one's (same partition: ids start with
      -- their input hash's first byte). Share it while it may still succeed; a task that
      -- failed or expired leaves a stale entry, which this task takes over.
      local existing_record = string.sub(record, 1, #record - #id) .. existing
      local kind = string.sub(redis.call('GET', existing_record) or '', 1, 1)
      if kind == 'P' or kind == 'S' then
        return {'dup', existing}
      end
      redis.call('SET', dedupe, id, 'PX', dedupe_ttl)
    end
  end
  local length = lengths[stream] or redis.call('XLEN', stream)
  if length >= capacity then
    if dedupe then
      -- Claimed for a task that is not admitted: let the next identical input run.
      redis.call('DEL', dedupe)
    end
    return {'full'}
  end
  redis.call('XADD', stream, '*', 'm', message)
  lengths[stream] = length + 1
  redis.call('SET', record, pending, 'PX', record_ttl)
  return {'ok'}
end

local replies = {}
local tasks = (#ARGV - 3) / 6
for i = 0, tasks - 1 do
  local a = 4 + 6 * i
  local dedupe = ARGV[a + 2]
  if dedupe == '' then
    dedupe = nil
  end
  local ok, reply = pcall(admit, ARGV[a], ARGV[a + 1], dedupe, ARGV[a + 3], ARGV[a + 4],
    ARGV[a + 5])
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
