-- Compare-and-delete by token, announcing the release.
-- KEYS[1] lease key; ARGV[1] token, ARGV[2] release channel, ARGV[3] name
-- Returns 1 (released) | 0 (already lost) | {'corrupt', detail}

-- Hot path: the lease carries the caller's token. Only its holder knows a 128-bit token, so
-- a match proves the record is that holder's live lease.
local token = redis.pcall('HGET', KEYS[1], 'token')
if token == ARGV[1] then
  -- Publish first: if the server refuses it (an ACL without the channel), the lease is
  -- still there and the error says why, rather than a release that half happened.
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  redis.call('DEL', KEYS[1])
  return 1
end

-- @helpers

return lost_or_corrupt(KEYS[1], token)
