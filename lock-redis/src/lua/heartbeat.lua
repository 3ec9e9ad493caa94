-- Extends the lease (a lock's, or a permit of a semaphore) if it is live and carries the token.
-- KEYS[1] lease; ARGV[1] token, ARGV[2] ttl in ms
-- Returns expires_at_ms (a positive integer) | 0 (lost) | {'corrupt', detail}

-- Hot path: a lock whose lease carries the caller's token (see release.lua). PEXPIRE is the
-- only write, so a refused one changes nothing; its error is returned as it came.
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'string' and string.find(v, ARGV[1], 1, true) == 1 then
  local extended = redis.pcall('PEXPIRE', KEYS[1], ARGV[2])
  if type(extended) == 'table' then
    return extended
  end
  local time = redis.call('TIME')
  return time[1] * 1000 + math.floor(time[2] / 1000) + ARGV[2]
end

-- @helpers

return renew_permit(KEYS[1], ARGV[1], ARGV[2], v)
