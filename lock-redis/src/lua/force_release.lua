-- Deletes whatever the lease key holds (a live lease or corrupt data), announcing it.
-- The fence counter stays, so the next holder still gets a higher fence.
-- KEYS[1] lease key; ARGV[1] release channel, ARGV[2] name
-- Returns {'ok'} (a live lease was removed) | {'free'} | {'cleared'} (corrupt data removed:
-- an unreadable record, or one that claims to be another lock's)
local lease = read_lease(KEYS[1])
if lease == nil then
  return {'free'}
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
redis.call('DEL', KEYS[1])
if lease == false or lease.name ~= ARGV[2] then
  return {'cleared'}
end
return {'ok'}
