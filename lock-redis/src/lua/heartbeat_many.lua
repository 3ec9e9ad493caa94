-- Heartbeats several leases in one call (standalone servers only: the keys may lie in
-- different cluster slots).
-- KEYS[i] lease key i; ARGV[1] ttl in ms, ARGV[1 + i] token i
-- Returns one heartbeat reply per key, in order.
local out = {}
for i, key in ipairs(KEYS) do
  local lease, detail = read_lease(key)
  if lease == false then
    out[i] = {'corrupt', detail}
  elseif not lease or lease.token ~= ARGV[1 + i] then
    out[i] = {'lost'}
  else
    redis.call('PEXPIRE', key, ARGV[1])
    out[i] = {'ok', decimal(now_ms + tonumber(ARGV[1]))}
  end
end
return out
