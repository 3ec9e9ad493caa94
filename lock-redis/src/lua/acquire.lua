-- Takes the lock if it is free, or if it was handed to this client.
-- KEYS[1] lease, KEYS[2] fence counter, KEYS[3] queue
-- ARGV[1] the record's head '<token> <limit> <pid> <ll> <hl> <nl> <label><host><name> ',
-- ARGV[2] ttl in ms, ARGV[3] '<how><trust><client id>': how '-' (do not register), 'w'
-- (register as waiting when held) or 'q' (also queue again after claiming: more of this
-- client's callers wait); trust '1' when a publication nobody hears proves the client gone
-- Returns the fence (= the server time in µs at the grant) | {fence, server time in µs}
--       | -1 - ms the holder's lease has left (held) | {'limit', limit held}
--       | {'corrupt', detail}
-- (the common answers are integers: cheaper to build and to read than tables)

-- Hot path: a fence counter this library can count with, and a free name (or one handed
-- to this client). The fence is max(counter + 1, server time in microseconds), so a
-- counter that went back (a restart from an older snapshot, a failover to a replica that
-- lagged) is overtaken by the clock.
local time = redis.call('TIME')
local micros = time[1] * 1000000 + time[2]
local counter = redis.pcall('GET', KEYS[2])
local fence = micros
if counter then
  local n = tonumber(counter)
  if not n or n >= 9007199254740991 then
    fence = nil
  elseif n >= micros then
    fence = n + 1
  end
end
local v
if fence then
  local text = string.format('%d', fence)
  local acquired = text
  if fence ~= micros then
    acquired = string.format('%d', micros)
  end
  if redis.call('SET', KEYS[1], ARGV[1] .. text .. ' ' .. acquired, 'NX', 'PX', ARGV[2]) then
    redis.call('SET', KEYS[2], text)
    if fence == micros then
      return fence
    end
    return {fence, micros}
  end
  -- Held: by a lease, or reserved for a waiting client. If for this one (its turn came),
  -- claim it here, unless it must queue again after (then below).
  v = redis.pcall('GET', KEYS[1])
  if v == '@' .. string.sub(ARGV[3], 3) and string.byte(ARGV[3], 1) ~= 113 then
    redis.call('SET', KEYS[1], ARGV[1] .. text .. ' ' .. acquired, 'PX', ARGV[2])
    redis.call('SET', KEYS[2], text)
    return {fence, micros}
  end
end

-- @helpers

if not fence then
  if type(counter) == 'table' and string.sub(counter.err, 1, 9) ~= 'WRONGTYPE' then
    return counter
  end
  return {'corrupt', fence_counter_problem(KEYS[2]) or
    ('the fence counter ' .. KEYS[2] .. ' cannot be counted with')}
end
local now = math.floor(micros / 1000)
local how, member = string.sub(ARGV[3], 1, 1), string.sub(ARGV[3], 2)
local client = string.sub(member, 2)

-- Grants the lock, overwriting what the lease key holds (a reservation, or expired permits).
local function grant()
  local text = string.format('%d', fence)
  redis.call('SET', KEYS[1], ARGV[1] .. text .. ' ' .. string.format('%d', micros), 'PX', ARGV[2])
  redis.call('SET', KEYS[2], text)
  if how == 'q' then
    register(KEYS[3], member, micros)
  end
  return {fence, micros}
end

if type(v) == 'string' then
  if string.byte(v, 1) == 64 then
    if string.sub(v, 2) == client then
      -- Handed to this client by a release: its turn.
      return grant()
    end
  else
    local record, why = parse_record(v)
    if not record then
      return {'corrupt', 'the lease ' .. KEYS[1] .. ' ' .. why}
    end
    if record.name ~= head_name(ARGV[1]) then
      return {'corrupt', 'the lease ' .. KEYS[1] .. ' claims to be for another lock'}
    end
  end
elseif type(v) == 'table' and string.sub(v.err, 1, 9) ~= 'WRONGTYPE' then
  return v
else
  local kind = redis.call('TYPE', KEYS[1])['ok']
  if kind == 'hash' then
    if redis.call('HEXISTS', KEYS[1], 'token') == 1 then
      -- A lease written by version 1 of this library: held until it expires.
      local lease, detail = read_lease_v1(KEYS[1])
      if lease == false then
        return {'corrupt', detail}
      end
      if lease.name ~= head_name(ARGV[1]) then
        return {'corrupt', 'the lease ' .. KEYS[1] .. ' claims to be for another lock'}
      end
    else
      local live, detail = read_permits(KEYS[1], now, true)
      if not live then
        return {'corrupt', detail}
      end
      if live.count > 0 then
        return {'limit', live.limit}
      end
      return grant()
    end
  elseif kind == 'none' then
    return grant()
  else
    return {'corrupt', 'the lease key ' .. KEYS[1] .. ' holds a ' .. kind .. ', not a lease'}
  end
end
if how ~= '-' then
  register(KEYS[3], member, micros)
end
return -1 - redis.call('PTTL', KEYS[1])
