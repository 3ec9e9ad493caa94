-- Compare-and-delete by token, announcing the release.
-- KEYS[1] lease key; ARGV[1] token, ARGV[2] release channel, ARGV[3] name
-- Returns {'ok'} | {'lost'} | {'corrupt', detail}
local lease, detail = read_lease(KEYS[1])
if lease == false then
  return {'corrupt', detail}
end
if not lease or lease.token ~= ARGV[1] then
  return {'lost'}
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return {'ok'}
