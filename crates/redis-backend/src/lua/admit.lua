-- Admits a gathered group of tasks in one call. Each task is handled on its own (a failure
-- answers for that task only): dedupe claim, capacity. The tasks given for one stream then
-- share ONE stream entry, so a group costs one XADD and one entry to read, acknowledge and
-- delete, not one per task (the gateway gives all of a call's tasks for one stream of the
-- node, whatever their partitions). The entry names (field `b`) the string the caller stored
-- just before with the group's messages, framed by their 4-byte big-endian lengths; field `n`
-- says how many, field `s` the positions, from 0, of those not admitted, which readers skip,
-- field `i` the ids of those admitted, so that an entry whose messages are gone can still
-- fail its tasks, and field `w` how long (ms) the group's oldest task waited to be written,
-- which the batcher counts as waited for its batch. The messages never pass through this
-- script: Lua hashes every byte of every string it is given, and 2 KB per task cost more
-- than all the commands. The
-- partition's task count (`<stream>:n`) bounds the queue, counted in tasks.
-- Pending records have no TTL: a TTL costs Redis a second dictionary entry per key, and a
-- pending record's life is its entry's, bounded by the queue's capacity; the final record
-- that replaces it (settle.lua, the settle's transaction, dead-lettering) has the TTL. On a
-- standalone Redis (ARGV[2] = '1') the admitted tasks' records are written together, in one
-- MSET once the entry exists; on a cluster each task's record is written as it is admitted,
-- so that a key of a slot that moved fails that task alone (see topology.rs).
-- One call serves every partition of one node (see topology.rs): KEYS[1], a key of one of
-- them, routes it; the keys of the tasks come as arguments (a task's record and dedupe entry
-- share its partition's slot; its stream may be another partition's on the node). A key another node serves fails its tasks alone. Records are single
-- strings (see record.rs).
-- ARGV[1] capacity of one partition (tasks); ARGV[2] '1' on a standalone Redis, '0' on a
-- cluster; ARGV[3] dedupe TTL (ms); then per stream: its key, the key of its tasks'
-- messages, their number k, how long (ms) the oldest waited to be written, then four per
-- task: its record, the dedupe entry of its input ('' for none), its id, its pending record.
-- Returns one string: each task's answer, in the order given, a line each: 'o' (admitted),
-- 'd' followed by the existing task's id (a duplicate), 'f' (the partition is full) or 'e'
-- followed by why it failed (on one line). One string, not a table per task (≈ 13% of
-- admission) nor a string per task: the caller parses one reply a call, not one a task.
local capacity = tonumber(ARGV[1])
local standalone = ARGV[2] == '1'
local dedupe_ttl = ARGV[3]

-- The ids admitted by this call so far: on a standalone Redis their records are written at
-- its end, so a second identical input in the same call learns from here that the first is
-- live.
local fresh = {}

-- Tasks in a partition's stream; an empty stream resets a count that drifted.
local function count(stream)
  if redis.call('XLEN', stream) == 0 then
    return 0
  end
  return tonumber(redis.call('GET', stream .. ':n') or '0') or 0
end

local function admit(queued, record, dedupe, id, pending)
  if dedupe then
    -- Claim the input, or learn which task holds it, in one command.
    local existing = redis.call('SET', dedupe, id, 'NX', 'GET', 'PX', dedupe_ttl)
    if existing then
      -- The existing task's record lives beside this one's (same partition: ids start with
      -- their input hash's first byte). Share it while it may still succeed; a task that
      -- failed or expired leaves a stale entry, which this task takes over.
      local existing_record = string.sub(record, 1, #record - #id) .. existing
      local kind = string.sub(redis.call('GET', existing_record) or '', 1, 1)
      if fresh[existing] or kind == 'P' or kind == 'W' or kind == 'S' then
        return 'd' .. existing
      end
      redis.call('SET', dedupe, id, 'PX', dedupe_ttl)
    end
  end
  if queued >= capacity then
    if dedupe then
      -- Claimed for a task that is not admitted: let the next identical input run.
      redis.call('DEL', dedupe)
    end
    return 'f'
  end
  if not standalone then
    redis.call('SET', record, pending)
  end
  return 'o'
end

local function why(error)
  local text
  if type(error) == 'table' then
    text = tostring(error.err or 'error')
  else
    text = tostring(error)
  end
  return (string.gsub(text, '\n', ' '))
end

local replies = {}
local a = 4
while a <= #ARGV do
  local stream, messages, k, waited = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3]
  local first = #replies + 1
  local ok, queued = pcall(count, stream)
  local admitted, skipped = {}, {}
  for j = 0, k - 1 do
    local t = a + 4 + 4 * j
    local dedupe = ARGV[t + 1]
    if dedupe == '' then
      dedupe = nil
    end
    local reply
    if ok then
      local fine, answer = pcall(admit, queued, ARGV[t], dedupe, ARGV[t + 2], ARGV[t + 3])
      reply = fine and answer or ('e' .. why(answer))
    else
      reply = 'e' .. why(queued)
    end
    replies[#replies + 1] = reply
    if reply == 'o' then
      fresh[ARGV[t + 2]] = true
      queued = queued + 1
      admitted[#admitted + 1] = t
    else
      skipped[#skipped + 1] = j
    end
  end
  if #admitted == 0 then
    redis.pcall('DEL', messages)
  else
    local added
    local ids = {}
    for i, t in ipairs(admitted) do
      ids[i] = ARGV[t + 2]
    end
    if redis.call('EXISTS', messages) == 0 then
      added = {err = 'the messages of the group were not stored'}
    elseif #skipped > 0 then
      added = redis.pcall('XADD', stream, '*', 'b', messages, 'n', k, 's',
        table.concat(skipped, ','), 'i', table.concat(ids, ','), 'w', waited)
    else
      added = redis.pcall('XADD', stream, '*', 'b', messages, 'n', k, 'i',
        table.concat(ids, ','), 'w', waited)
    end
    if type(added) == 'table' and added.err then
      -- Not queued after all: no record or dedupe entry is left for these tasks.
      redis.pcall('DEL', messages)
      for _, t in ipairs(admitted) do
        if not standalone then
          redis.pcall('DEL', ARGV[t])
        end
        if ARGV[t + 1] ~= '' then
          redis.pcall('DEL', ARGV[t + 1])
        end
      end
      for i = first, #replies do
        if replies[i] == 'o' then
          replies[i] = 'e' .. why(added)
        end
      end
    else
      redis.call('SET', stream .. ':n', queued)
      if standalone then
        -- The records, now that the entry that will settle them exists. A failure here
        -- leaves the tasks queued all the same (their results are written when they end).
        local records = {}
        for _, t in ipairs(admitted) do
          records[#records + 1] = ARGV[t]
          records[#records + 1] = ARGV[t + 3]
        end
        redis.pcall('MSET', unpack(records))
      end
    end
  end
  a = a + 4 + 4 * k
end
return table.concat(replies, '\n')
