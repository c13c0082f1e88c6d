-- Admits a gathered group of tasks in one call. Each task is handled on its own (a failure
-- answers for that task only): dedupe claim, capacity, pending record. The tasks admitted to
-- one partition then share ONE stream entry (field `g`: their messages, each framed by the
-- caller with its 4-byte big-endian length; field `n`: how many), so a group costs one XADD
-- and one entry to read, acknowledge and delete, not one per task. The partition's task
-- count (`<stream>:n`) bounds the queue, counted in tasks.
-- One call serves every partition of one node (see topology.rs): KEYS[1], a key of one of
-- them, routes it; the keys of the tasks come as arguments (a task's keys share its
-- partition's slot). A key another node serves fails that task alone. Records are single
-- strings (see record.rs).
-- ARGV[1] capacity of one partition (tasks); ARGV[2] record TTL (ms); ARGV[3] dedupe TTL
-- (ms); then six per task: the partition's stream, the task's record, the dedupe entry of
-- its input ('' for none), the framed task message, the task id, its pending record.
-- Returns one reply per task: {'ok'}, {'dup', existing_task_id}, {'full'} or {'err', why}.
local capacity = tonumber(ARGV[1])
local record_ttl = ARGV[2]
local dedupe_ttl = ARGV[3]
-- Tasks in each partition's stream, read once; an empty stream resets a count that drifted.
local queued = {}
-- What each partition's entry will carry, in the order partitions first appear.
local groups = {}
local order = {}

local function count(stream)
  local n = queued[stream]
  if n == nil then
    if redis.call('XLEN', stream) == 0 then
      n = 0
    else
      n = tonumber(redis.call('GET', stream .. ':n') or '0') or 0
    end
    queued[stream] = n
  end
  return n
end

local function admit(i, stream, record, dedupe, message, id, pending)
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
  local n = count(stream)
  if n >= capacity then
    if dedupe then
      -- Claimed for a task that is not admitted: let the next identical input run.
      redis.call('DEL', dedupe)
    end
    return {'full'}
  end
  queued[stream] = n + 1
  redis.call('SET', record, pending, 'PX', record_ttl)
  local group = groups[stream]
  if not group then
    group = {messages = {}, members = {}}
    groups[stream] = group
    order[#order + 1] = stream
  end
  group.messages[#group.messages + 1] = message
  group.members[#group.members + 1] = {i, record, dedupe}
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
  local ok, reply = pcall(admit, i + 1, ARGV[a], ARGV[a + 1], dedupe, ARGV[a + 3],
    ARGV[a + 4], ARGV[a + 5])
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

-- One entry per partition. If it cannot be added, its tasks were not admitted: their
-- records and dedupe claims go, and each answers the error.
for _, stream in ipairs(order) do
  local group = groups[stream]
  local added = redis.pcall('XADD', stream, '*', 'g', table.concat(group.messages), 'n',
    #group.messages)
  if type(added) == 'table' and added.err then
    for _, member in ipairs(group.members) do
      redis.pcall('DEL', member[2])
      if member[3] then
        redis.pcall('DEL', member[3])
      end
      replies[member[1]] = {'err', tostring(added.err)}
    end
  else
    redis.call('SET', stream .. ':n', queued[stream])
  end
end
return replies
