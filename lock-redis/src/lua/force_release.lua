-- Deletes whatever the lease key holds (a live lease or corrupt data), announcing it.
-- The fence counter stays, so the next holder still gets a higher fence.
-- KEYS[1] lease key; ARGV[1] release channel, ARGV[2] name
-- Returns {'ok'} (a live lease was removed) | {'free'} | {'cleared'} (corrupt data removed)
local lease = read_lease(KEYS[1])
if lease == nil then
  return {'free'}
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
if lease == false then
  return {'cleared'}
end
return {'ok'}
