-- Heartbeats several leases in one call (standalone servers only: the keys may lie in
-- different cluster slots).
-- KEYS[i] lease key i; ARGV[1] ttl in ms, ARGV[1 + i] token i
-- Returns one heartbeat reply per key, in order.
local expires_at = now_ms() + tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local token = redis.pcall('HGET', key, 'token')
  if token == ARGV[1 + i] then
    redis.call('PEXPIRE', key, ARGV[1])
    out[i] = expires_at
  else
    local reply = lost_or_corrupt(key, token)
    if type(reply) == 'table' and reply.err then
      return reply
    end
    out[i] = reply
  end
end
return out
