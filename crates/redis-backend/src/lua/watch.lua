-- Reads a task's record and, if it is still pending, records that a gateway waits for it
-- (`;<gateway>` at the end of the pending record, once), so that the script storing the
-- result tells that gateway too. One round trip, and no completion can fall between the read
-- and the registration. Records are single strings (see record.rs).
-- KEYS[1] the record; ARGV[1] the gateway id.
-- Returns the record (nil when there is none).
local record = redis.call('GET', KEYS[1])
if record and string.sub(record, 1, 1) == 'P' then
  local owner_len, pos = string.match(record, '^P%d*;(%d+);()')
  if pos then
    local watchers = string.sub(record, pos + tonumber(owner_len)) .. ';'
    if not string.find(watchers, ';' .. ARGV[1] .. ';', 1, true) then
      redis.call('APPEND', KEYS[1], ';' .. ARGV[1])
    end
  end
end
return record
