-- Stores a batch's results, tells the waiting gateways, then acknowledges and deletes the
-- batch's stream entries, in one atomic step. One call serves every partition of one node
-- (see topology.rs): KEYS[1], a key of one of them, routes it; the other keys come as
-- arguments.
-- A SUCCESS is final; a FAILED is written only over a pending (or missing) record; a SUCCESS
-- over a FAILED replaces it whole. Records are single strings (see record.rs). The
-- acknowledgement comes last: if anything before it fails, the entries stay pending and are
-- delivered again, never acknowledged without a result.
-- ARGV[1] result TTL (ms); ARGV[2] the publish command (PUBLISH or SPUBLISH); ARGV[3] the
-- notification channel prefix (a gateway id follows; on a cluster, a channel of KEYS[1]'s
-- slot, which every gateway subscribes to); ARGV[4] the consumer group; ARGV[5] the number
-- of completions n; then four per completion: its record's key; its final record, whole
-- when the caller knows the record's head (`created_at;owner length;owner`, from the task),
-- else its status and tail (`S;<completed_at>;<output>`, the head to be read from the
-- pending record); the length of that head ('' if not known); the gateway to notify (''
-- for none). The caller builds the strings: every string a script is given or makes is
-- hashed byte by byte, so each one built here costs as much again; then, for
-- each stream acknowledged, its key, the number of entry ids, the number of tasks those
-- entries held (taken off the stream's task count, `<stream>:n`), the number of keys of
-- their groups' messages (deleted with them), the ids and those keys.
-- A gateway's notice is a MessagePack array of, for each result written, the record's key
-- and the final record as stored (notify.rs reads it): packed in C, where joining the
-- strings in Lua made and hashed each intermediate string.
-- Returns the number of results written.
local ttl = ARGV[1]
local publish = ARGV[2]
local channel_prefix = ARGV[3]
local group = ARGV[4]
local n = tonumber(ARGV[5])
local notices = {}
local order = {}
local function notify(gateway, key, record)
  if gateway == '' then
    return
  end
  local list = notices[gateway]
  if not list then
    list = {}
    notices[gateway] = list
    order[#order + 1] = gateway
  end
  local i = #list
  list[i + 1] = key
  list[i + 2] = record
end

-- The gateways that wait on a pending record, other than `gateway`, are told too.
local function notify_watchers(old, owner_end, gateway, key, record)
  for other in string.gmatch(string.sub(old, owner_end + 1), ';([^;]+)') do
    if other ~= gateway then
      notify(other, key, record)
    end
  end
end

-- Where the owner of a record ends (its head's last byte), or nil.
local function owner_end(record)
  local owner_len, pos = string.match(record, '^[PWSF]%d*;(%d+);()')
  if pos then
    return pos + tonumber(owner_len) - 1
  end
  return nil
end

-- Record kinds as bytes: a one-character string made per task costs more than the compare.
local S, F, W = string.byte('SFW', 1, 3)
local written = 0
for i = 1, n do
  local a = 6 + 4 * (i - 1)
  local key = ARGV[a]
  local value = ARGV[a + 1]
  local head_len = ARGV[a + 2]
  local gateway = ARGV[a + 3]
  local status = string.byte(value)
  if head_len ~= '' then
    -- The head is known: write first, in one command, and put a final record back if
    -- there was one (a SUCCESS is final; a FAILED gives way only to a SUCCESS).
    local old = redis.call('SET', key, value, 'GET', 'PX', ttl)
    local kind = old and string.byte(old)
    if kind == S or (kind == F and status == F) then
      redis.call('SET', key, old, 'PX', ttl)
    else
      written = written + 1
      notify(gateway, key, value)
      -- A pending record of kind W lists, after its head, gateways that wait too.
      local ends = kind == W and owner_end(old)
      if ends then
        notify_watchers(old, ends, gateway, key, value)
      end
    end
  else
    local old = redis.call('GET', key)
    local kind = old and string.byte(old)
    if kind ~= S and (status == S or kind ~= F) then
      -- The head (created_at, owner) comes from the record written at admission; without
      -- one (gone, or a task admitted before its record was written) it is empty.
      local head = '0;0;'
      local ends = old and owner_end(old)
      if ends then
        head = string.sub(old, 2, ends)
      end
      local record = string.sub(value, 1, 1) .. head .. string.sub(value, 2)
      redis.call('SET', key, record, 'PX', ttl)
      written = written + 1
      notify(gateway, key, record)
      if kind == W and ends then
        notify_watchers(old, ends, gateway, key, record)
      end
    end
  end
end
for _, gateway in ipairs(order) do
  redis.call(publish, channel_prefix .. gateway, cmsgpack.pack(notices[gateway]))
end
local a = 6 + 4 * n
while a <= #ARGV do
  local stream = ARGV[a]
  local count = tonumber(ARGV[a + 1])
  local tasks = tonumber(ARGV[a + 2])
  local groups = tonumber(ARGV[a + 3])
  if count > 0 then
    local ids = {}
    for k = 1, count do
      ids[k] = ARGV[a + 3 + k]
    end
    redis.call('XACK', stream, group, unpack(ids))
    local deleted = redis.call('XDEL', stream, unpack(ids))
    if deleted > 0 then
      -- Entries deleted before (a second settle) held their share of the tasks: the count
      -- is approximate then, and exact again once the stream is empty.
      local left = 0
      if redis.call('XLEN', stream) > 0 then
        left = (tonumber(redis.call('GET', stream .. ':n') or '0') or 0)
          - math.floor(tasks * deleted / count + 0.5)
      end
      redis.call('SET', stream .. ':n', math.max(left, 0))
    end
  end
  if groups > 0 then
    local keys = {}
    for k = 1, groups do
      keys[k] = ARGV[a + 3 + count + k]
    end
    redis.call('DEL', unpack(keys))
  end
  a = a + count + groups + 4
end
return written
