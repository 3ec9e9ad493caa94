-- Heartbeats several leases in one call (one server only: the keys may lie in different
-- cluster slots).
-- KEYS[i] lease key i; ARGV[1] ttl in ms, ARGV[1 + i] token i
-- Returns one heartbeat reply per key, in order, or the first unexpected error as it came.
-- The only writes renew the callers' own leases, so a batch cut short by an error leaves
-- every lease live or extended by its own holder, never half-written; and the error that can
-- really stop it (PEXPIRE refused by an ACL) stops it at the first one.
local now = server_time()
local expires_at = now + tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.pcall('GET', key)
  local reply
  if type(v) == 'string' and string.find(v, ARGV[1 + i], 1, true) == 1 then
    reply = redis.pcall('PEXPIRE', key, ARGV[1])
    if type(reply) ~= 'table' then
      reply = expires_at
    end
  else
    reply = renew_permit(key, ARGV[1 + i], ARGV[1], v)
  end
  if type(reply) == 'table' and reply.err then
    return reply
  end
  out[i] = reply
end
return out
