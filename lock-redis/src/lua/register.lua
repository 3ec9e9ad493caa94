-- Registers this client as waiting for the name, if it is held (a caller that waits without
-- having just tried to acquire).
-- KEYS[1] lease, KEYS[2] queue; ARGV[1] '<trust><client id>' (trust '1' when a
-- publication nobody hears proves this client gone)
-- Returns -1 when the name can be taken now (nothing registered), else the ms until what
-- holds it expires unless renewed.
local now, micros = server_time()
local kind = redis.call('TYPE', KEYS[1])['ok']
local left
if kind == 'hash' and redis.call('HEXISTS', KEYS[1], 'token') == 0 then
  local live = read_permits(KEYS[1], now, false)
  if live and live.count > 0 and live.count >= live.limit then
    left = live.soonest - now
  end
elseif kind ~= 'none' then
  left = redis.call('PTTL', KEYS[1])
end
if not left or left < 0 then
  return -1
end
register(KEYS[2], ARGV[1], micros)
return left
