-- Shared by every lock script. It is prepended to a script, or inserted at the script's
-- `-- @helpers` line: what comes before that line is the script's hot path (acquiring a
-- free name; heartbeat and release by the holder), which needs none of these helpers and
-- returns before they are even defined.
--
-- A lease is a hash with a PX expiry:
--   token           owner token, 32 lowercase hex digits
--   label, host     free text
--   pid             decimal
--   fence           decimal, copied from the fence counter at acquisition
--   acquired_at_ms  server time (ms since the Unix epoch) of the acquisition
--   name            the lock name, in full
-- Redis expires the key itself, so a lease key that exists is a live lease.
--
-- The hot paths do only what they must. Everything else goes through `read_lease`, which
-- checks every field, so data this library did not write is reported as corrupt, never
-- taken for a lease. Errors caught with redis.pcall are only ever the expected ones (a key
-- of another type, a counter that is not an integer); any other error (an ACL refusal, a
-- read-only replica) is returned by the script as it came, so the client sees what really
-- went wrong. (Returned, not raised with error(): Redis 6 loses a raised error's code.)

-- Server time in whole milliseconds since the Unix epoch.
local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
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

-- Fences are below 2^53: Lua numbers are doubles, exact only up to there, so a counter at
-- or above it would give rounded, repeated fences.
local FENCE_LIMIT = 9007199254740992

-- What is wrong with the fence counter at `key`, or nil when this library can count with it
-- (no counter, or an integer of magnitude below 2^53). A counter is never written out of
-- range here; one that is was set by something else (an operator, another tool).
local function fence_counter_problem(key)
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then
    return nil
  end
  local fix = '; force_release on the lock replaces it with a fresh counter'
  if kind ~= 'string' then
    return 'the fence counter ' .. key .. ' holds a ' .. kind .. ', not a string' .. fix
  end
  local value = redis.call('GET', key)
  if value ~= '0' and (#value > 20 or not string.match(value, '^-?[1-9][0-9]*$')) then
    return 'the fence counter ' .. key .. ' is not an integer' .. fix
  end
  local digits = string.match(value, '[0-9]+')
  if #digits > 16 or (#digits == 16 and digits >= '9007199254740992') then
    return 'the fence counter ' .. key .. ' is at ' .. value ..
      ', out of the range of fences (below 2^53 = 9007199254740992)' .. fix
  end
  return nil
end

-- Restarts the fence counter at `key` at the server's time in microseconds (`time` from
-- TIME), or at `floor` (a fence as decimal text) when that is higher and in range. The time
-- is higher than any fence issued before from a counter seeded this way, as long as fewer
-- than a million were issued per second on average.
local function seed_fence_counter(key, time, floor)
  local seed = time[1] .. string.rep('0', 6 - #time[2]) .. time[2]
  if floor and tonumber(floor) > tonumber(seed) and tonumber(floor) < FENCE_LIMIT then
    seed = floor
  end
  redis.call('SET', key, seed)
end

-- The reply of a heartbeat or release whose token did not match: 0 (the lease is lost),
-- {'corrupt', detail}, or an error reply for the script to return. `token` is what
-- redis.pcall('HGET', key, 'token') gave: nil, another token, or an error, which is
-- WRONGTYPE for a key of another type (diagnosed here) or something to pass on.
local function lost_or_corrupt(key, token)
  if type(token) == 'table' and string.sub(token.err, 1, 9) ~= 'WRONGTYPE' then
    return token
  end
  local lease, detail = read_lease(key)
  if lease == false then
    return {'corrupt', detail}
  end
  return 0
end
