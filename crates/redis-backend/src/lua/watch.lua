-- Reads a task's result hash and, if it is still pending, records that a gateway waits for
-- it (field `w:<gateway>`), so that the script storing the result tells that gateway too.
-- One round trip, and no completion can fall between the read and the registration.
-- KEYS[1] the result hash; ARGV[1] the watcher field.
-- Returns the hash's fields and values (empty when there is none).
local fields = redis.call('HGETALL', KEYS[1])
for j = 1, #fields, 2 do
  if fields[j] == 'status' and fields[j + 1] == 'PENDING' then
    redis.call('HSET', KEYS[1], ARGV[1], '1')
  end
end
return fields
