-- Takes the lease if the name is free (an expired lease is gone already).
-- KEYS[1] lease key, KEYS[2] fence counter key
-- ARGV[1] token, ARGV[2] label, ARGV[3] pid, ARGV[4] host, ARGV[5] ttl in ms, ARGV[6] name
-- Returns {fence, expires_at_ms} (integers) | 0 when someone holds it | {'corrupt', detail}
-- (the hot paths answer integers: cheaper to build and to read than status words)

-- Writes the lease with `fence`, acquired at the server time `time` (from TIME).
local function grant(fence, time)
  local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  redis.call('HSET', KEYS[1],
    'token', ARGV[1], 'label', ARGV[2], 'pid', ARGV[3], 'host', ARGV[4],
    'fence', string.format('%d', fence), 'acquired_at_ms', string.format('%d', now),
    'name', ARGV[6])
  -- Redis does not roll a script back: were the expiry refused after the HSET (an ACL
  -- without PEXPIRE), a lease without a TTL would block the name for ever. Undo the HSET
  -- and pass the error on, so the grant happens whole or not at all.
  local expiring = redis.pcall('PEXPIRE', KEYS[1], ARGV[5])
  if type(expiring) == 'table' then
    redis.pcall('DEL', KEYS[1])
    return expiring
  end
  return {fence, now + tonumber(ARGV[5])}
end

-- Hot path: no lease key, and a counter that was counting. Lua numbers are doubles, exact
-- below 2^53 (FENCE_LIMIT in the helpers, not defined yet here); a higher counter would
-- give rounded, repeated fences.
local free = redis.call('EXISTS', KEYS[1]) == 0
local fence = free and redis.pcall('INCR', KEYS[2])
if type(fence) == 'number' and fence >= 2 and fence < 9007199254740992 then
  return grant(fence, redis.call('TIME'))
end

-- @helpers

if not free then
  -- A live lease, or foreign data: only now is the record read and checked.
  local lease, detail = read_lease(KEYS[1])
  if lease == false then
    return {'corrupt', detail}
  end
  if lease.name ~= ARGV[6] then
    return {'corrupt', 'the lease ' .. KEYS[1] .. ' claims to be for another lock'}
  end
  return 0
end

if type(fence) == 'table' or fence >= FENCE_LIMIT then
  -- INCR failed, or counted beyond what a fence can be. A counter this library cannot count
  -- with (foreign data, or out of range: INCR overflows at 2^63 - 1) is corrupt; any other
  -- failure (an ACL refusal, a read-only replica) is returned as it came.
  local problem = fence_counter_problem(KEYS[2])
  if problem then
    return {'corrupt', problem}
  end
  return fence
end

-- INCR gave 1 (or less): the counter was missing (a new name, or a server that restarted
-- without persistence) or held nothing this library counted up to. It restarts at the
-- server's time in microseconds (see seed_fence_counter).
local time = redis.call('TIME')
seed_fence_counter(KEYS[2], time, nil)
return grant(redis.call('INCR', KEYS[2]), time)
