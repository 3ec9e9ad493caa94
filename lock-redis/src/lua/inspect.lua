-- Reads the live lease without its token.
-- KEYS[1] lease key
-- Returns {'ok', name, label, pid, host, fence, acquired_at_ms, expires_at_ms} | {'free'}
--       | {'corrupt', detail}
local lease, detail = read_lease(KEYS[1])
if lease == false then
  return {'corrupt', detail}
end
if not lease then
  return {'free'}
end
return {'ok', lease.name, lease.label, lease.pid, lease.host, lease.fence,
        lease.acquired_at_ms, now_ms() + lease.pttl}
