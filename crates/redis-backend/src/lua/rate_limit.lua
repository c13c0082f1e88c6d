-- One GCRA step for one user, on Redis's own clock, so that every gateway counts against the
-- same allowance. KEYS[1] the user's theoretical arrival time (µs since the epoch).
-- ARGV[1] the interval one request uses up (µs); ARGV[2] the period (µs); ARGV[3] how many
-- requests this call counts (a request of several inputs), all allowed or none.
-- Returns {allowed (0/1), remaining, reset (µs), retry_after (µs)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then
  tat = now
end
local new_tat = tat + interval * tonumber(ARGV[3] or '1')
local allow_at = new_tat - period
if now < allow_at then
  return {0, 0, tat - now, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
local used = new_tat - now
return {1, math.floor((period - used) / interval), used, 0}
