-- Heartbeats several leases in one call (standalone servers only: the keys may lie in
-- different cluster slots).
-- KEYS[i] lease key i; ARGV[1] ttl in ms, ARGV[1 + i] token i
-- Returns one heartbeat reply per key, in order, or the first unexpected error as it came.
-- The only writes are PEXPIREs of the callers' own leases, so a batch cut short by an error
-- leaves every lease live or extended by its own holder, never half-written; and the error
-- that can really stop it (PEXPIRE refused by an ACL) stops it at the first one.
local expires_at = now_ms() + tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local token = redis.pcall('HGET', key, 'token')
  local reply
  if token == ARGV[1 + i] then
    reply = redis.pcall('PEXPIRE', key, ARGV[1])
    if type(reply) ~= 'table' then
      reply = expires_at
    end
  else
    reply = lost_or_corrupt(key, token)
  end
  if type(reply) == 'table' and reply.err then
    return reply
  end
  out[i] = reply
end
return out
