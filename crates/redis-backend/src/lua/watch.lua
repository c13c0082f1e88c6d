-- Reads a task's record and, if it is still pending, records that a gateway waits for it
-- (`;<gateway>` at the end of the pending record, once, and the record's kind `P` turned
-- into `W`, so that the settle script looks for watchers only where there are some), so
-- that the script storing the result tells that gateway too. One round trip, and no completion can fall between the read
-- and the registration. Records are single strings (see record.rs).
-- KEYS[1] the record; ARGV[1] the gateway id.
-- Returns the record (nil when there is none).
local record = redis.call('GET', KEYS[1])
local kind = record and string.sub(record, 1, 1)
if kind == 'P' or kind == 'W' then
  local owner_len, pos = string.match(record, '^[PW]%d*;(%d+);()')
  if pos then
    local watchers = string.sub(record, pos + tonumber(owner_len)) .. ';'
    if not string.find(watchers, ';' .. ARGV[1] .. ';', 1, true) then
      if kind == 'P' then
        redis.call('SETRANGE', KEYS[1], 0, 'W')
      end
      redis.call('APPEND', KEYS[1], ';' .. ARGV[1])
    end
  end
end
return record
