-- Extends the lease if it is still live and carries the token.
-- KEYS[1] lease key; ARGV[1] token, ARGV[2] ttl in ms
-- Returns expires_at_ms (a positive integer) | 0 (lost) | {'corrupt', detail}

-- Hot path: the lease carries the caller's token (see release.lua). PEXPIRE is the only
-- write, so a refused one changes nothing; its error is returned as it came.
local token = redis.pcall('HGET', KEYS[1], 'token')
if token == ARGV[1] then
  local extended = redis.pcall('PEXPIRE', KEYS[1], ARGV[2])
  if type(extended) == 'table' then
    return extended
  end
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) + tonumber(ARGV[2])
end

-- @helpers

return lost_or_corrupt(KEYS[1], token)
