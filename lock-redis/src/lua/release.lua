-- Compare-and-delete by token; a freed lock or permit is handed to the next waiting client.
-- KEYS[1] lease, KEYS[2] queue; ARGV[1] token
-- Returns 1 (released) | 0 (already lost) | {'corrupt', detail}

-- Hot path: the lease carries the caller's token, and nobody waits. Only its holder knows a
-- 128-bit token, so a match proves the record is that holder's live lease.
local v = redis.pcall('GET', KEYS[1])
local mine = type(v) == 'string' and string.find(v, ARGV[1], 1, true) == 1
if mine and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[1])
  return 1
end

-- @helpers

if mine then
  -- A refused publication (an ACL without the channel) leaves the lease held and the
  -- waiter queued, rather than a release that half happened.
  return hand_off_lock(KEYS[1], KEYS[2], nil) or 1
end
local now = server_time()
if type(v) == 'table' and string.sub(v.err, 1, 9) == 'WRONGTYPE'
    and redis.call('TYPE', KEYS[1])['ok'] == 'hash'
    and redis.call('HEXISTS', KEYS[1], 'token') == 0 then
  -- A permit of a semaphore.
  local value = redis.call('HGET', KEYS[1], ARGV[1])
  if not value then
    return 0
  end
  local expires = tonumber(string.match(value, '^(%d+) '))
  local record = parse_record(string.match(value, '^%d+ (.*)$') or '')
  if not expires or not record then
    return {'corrupt', 'the permit ' .. ARGV[1] .. ' of ' .. KEYS[1] .. ' is not a permit this library wrote'}
  end
  if expires <= now then
    redis.call('HDEL', KEYS[1], ARGV[1])
    tidy_permits(KEYS[1], now)
    return 0
  end
  if redis.call('EXISTS', KEYS[2]) == 1 then
    local refused = hand_off_permits(KEYS[1], KEYS[2], now, 1, record.limit, nil)
    if refused then
      return refused
    end
  end
  redis.call('HDEL', KEYS[1], ARGV[1])
  tidy_permits(KEYS[1], now)
  return 1
end
return lost_or_corrupt(KEYS[1], v)
