-- Deletes whatever the lease key holds (a live lease or corrupt data), announcing it.
-- The fence counter stays, so the next holder still gets a higher fence; only a counter
-- that acquire cannot count with (foreign data, or out of range) is replaced by a fresh
-- one, above the fence of the lease removed here.
-- KEYS[1] lease key, KEYS[2] fence counter key; ARGV[1] release channel, ARGV[2] name
-- Returns {status} or {status, detail} when the fence counter was replaced (detail says
-- what was wrong with it). status: 'ok' (a live lease was removed) | 'free' | 'cleared'
-- (corrupt data removed: an unreadable record, or one that claims to be another lock's)
local lease = read_lease(KEYS[1])
local problem = fence_counter_problem(KEYS[2])
if lease ~= nil then
  -- Publish first: if the server refuses it, nothing has changed yet (see release.lua).
  redis.call('PUBLISH', ARGV[1], ARGV[2])
  redis.call('DEL', KEYS[1])
end
if problem then
  seed_fence_counter(KEYS[2], redis.call('TIME'), lease and lease.fence)
end
if lease == nil then
  return {'free', problem}
end
if lease == false or lease.name ~= ARGV[2] then
  return {'cleared', problem}
end
return {'ok', problem}
