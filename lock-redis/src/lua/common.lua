-- Shared by every lock script (prepended to each one).
--
-- A lease is a hash with a PX expiry:
--   token           owner token, 32 lowercase hex digits
--   label, host     free text
--   pid             decimal
--   fence           decimal, copied from the fence counter at acquisition
--   acquired_at_ms  server time (ms since the Unix epoch) of the acquisition
--   name            the lock name, in full
-- Redis expires the key itself, so a lease key that exists is a live lease.

-- Server time as {seconds, microseconds} strings, and in whole milliseconds.
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local function decimal(n)
  return string.format('%d', n)
end

-- The lease at `key`: nil when there is none, the lease table when it is readable, or
-- false and a description when the key holds something this library did not write.
local function read_lease(key)
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then
    return nil
  end
  if kind ~= 'hash' then
    return false, 'the lease key ' .. key .. ' holds a ' .. kind .. ', not a hash'
  end
  local v = redis.call('HMGET', key, 'token', 'label', 'pid', 'host', 'fence', 'acquired_at_ms', 'name')
  local lease = {
    token = v[1], label = v[2], pid = v[3], host = v[4],
    fence = v[5], acquired_at_ms = v[6], name = v[7],
  }
  if not lease.token or #lease.token ~= 32 or not string.match(lease.token, '^[0-9a-f]+$') then
    return false, 'the lease ' .. key .. ' has no valid owner token'
  end
  for _, field in ipairs({'pid', 'fence', 'acquired_at_ms'}) do
    local value = lease[field]
    if not value or #value > 19 or not string.match(value, '^[0-9]+$') then
      return false, 'the lease ' .. key .. ' has no valid ' .. field
    end
  end
  for _, field in ipairs({'label', 'host', 'name'}) do
    if not lease[field] then
      return false, 'the lease ' .. key .. ' has no ' .. field
    end
  end
  local pttl = redis.call('PTTL', key)
  if pttl < 0 then
    return false, 'the lease ' .. key .. ' has no expiry'
  end
  lease.pttl = pttl
  return lease
end
