-- Takes the lease if the name is free (an expired lease is gone already).
-- KEYS[1] lease key, KEYS[2] fence counter key
-- ARGV[1] token, ARGV[2] label, ARGV[3] pid, ARGV[4] host, ARGV[5] ttl in ms, ARGV[6] name
-- Returns {'ok', fence, expires_at_ms} | {'held'} | {'corrupt', detail}
local lease, detail = read_lease(KEYS[1])
if lease == false then
  return {'corrupt', detail}
end
if lease then
  return {'held'}
end

local counter = redis.call('TYPE', KEYS[2])['ok']
if counter == 'none' then
  -- A missing counter (a new name, or a server that restarted without persistence) starts
  -- at the server's time in microseconds: higher than any fence issued before, as long as
  -- fewer than a million were issued per second on average.
  redis.call('SET', KEYS[2], time[1] .. string.rep('0', 6 - #time[2]) .. time[2])
elseif counter ~= 'string' then
  return {'corrupt', 'the fence counter ' .. KEYS[2] .. ' holds a ' .. counter .. ', not a string'}
end
local fence = redis.pcall('INCR', KEYS[2])
if type(fence) ~= 'number' then
  return {'corrupt', 'the fence counter ' .. KEYS[2] .. ' is not an integer'}
end

local ttl = tonumber(ARGV[5])
redis.call('HSET', KEYS[1],
  'token', ARGV[1], 'label', ARGV[2], 'pid', ARGV[3], 'host', ARGV[4],
  'fence', decimal(fence), 'acquired_at_ms', decimal(now_ms), 'name', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {'ok', decimal(fence), decimal(now_ms + ttl)}
