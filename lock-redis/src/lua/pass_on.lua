-- Gives up a lock or permit handed to this client (none of its callers waits any more) to
-- the next waiting client.
-- KEYS[1] lease, KEYS[2] queue; ARGV[1] this client's id
-- Returns 1 when a reservation for this client was passed on, else 0.
local now = server_time()
local mine = '@' .. ARGV[1]
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'string' and redis.call('GET', KEYS[1]) == mine then
  return hand_off_lock(KEYS[1], KEYS[2], ARGV[1]) or 1
end
if kind == 'hash' then
  local reserved = redis.call('HGET', KEYS[1], mine)
  if reserved then
    local limit = tonumber(string.match(reserved, ' (%d+)$')) or 1
    local refused = hand_off_permits(KEYS[1], KEYS[2], now, 1, limit, ARGV[1])
    if refused then
      return refused
    end
    redis.call('HDEL', KEYS[1], mine)
    tidy_permits(KEYS[1], now)
    return 1
  end
end
return 0
