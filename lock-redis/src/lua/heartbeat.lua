-- Extends the lease if it is still live and carries the token.
-- KEYS[1] lease key; ARGV[1] token, ARGV[2] ttl in ms
-- Returns {'ok', expires_at_ms} | {'lost'} | {'corrupt', detail}
local lease, detail = read_lease(KEYS[1])
if lease == false then
  return {'corrupt', detail}
end
if not lease or lease.token ~= ARGV[1] then
  return {'lost'}
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {'ok', decimal(now_ms + tonumber(ARGV[2]))}
