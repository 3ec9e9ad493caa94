-- Takes one of ARGV[4] permits of a semaphore, if one is free or was handed to this client.
-- KEYS and ARGV[1..3] as in acquire.lua (the head carries the limit); ARGV[4] the limit.
-- Returns {fence, server time in µs} | as acquire.lua.
local now, micros = server_time()
local limit = tonumber(ARGV[4])
local how, member = string.sub(ARGV[3], 1, 1), string.sub(ARGV[3], 2)
local client = string.sub(member, 2)
local fence, problem = next_fence(KEYS[2], micros)
if not fence then
  return {'corrupt', problem}
end
local kind = redis.call('TYPE', KEYS[1])['ok']
local live
if kind == 'string' then
  local v = redis.call('GET', KEYS[1])
  if string.byte(v, 1) ~= 64 then
    local record, why = parse_record(v)
    if not record then
      return {'corrupt', 'the lease ' .. KEYS[1] .. ' ' .. why}
    end
  end
  -- A lock's lease, or a lock being handed to a waiter.
  return {'limit', 1}
elseif kind == 'hash' then
  if redis.call('HEXISTS', KEYS[1], 'token') == 1 then
    local lease, detail = read_lease_v1(KEYS[1])
    if lease == false then
      return {'corrupt', detail}
    end
    return {'limit', 1}
  end
  local detail
  live, detail = read_permits(KEYS[1], now, true)
  if not live then
    return {'corrupt', detail}
  end
  if live.count > 0 and live.limit ~= limit then
    return {'limit', live.limit}
  end
elseif kind ~= 'none' then
  return {'corrupt', 'the lease key ' .. KEYS[1] .. ' holds a ' .. kind .. ', not a lease'}
end
local mine = '@' .. client
local claimed = live and live.reserved[mine]
if claimed or not live or live.count < limit then
  if claimed then
    redis.call('HDEL', KEYS[1], mine)
  end
  local text = string.format('%d', fence)
  local token = string.sub(ARGV[1], 1, 32)
  local expires = now + tonumber(ARGV[2])
  redis.call('HSET', KEYS[1], token,
    expires .. ' ' .. ARGV[1] .. text .. ' ' .. string.format('%d', micros))
  if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
    -- Redis does not roll a script back: were the expiry refused (an ACL without
    -- PEXPIRE), a permit without a TTL would hold a slot for ever. Undo it and pass the
    -- error on, so the grant happens whole or not at all.
    local extended = redis.pcall('PEXPIRE', KEYS[1], ARGV[2])
    if type(extended) == 'table' then
      redis.call('HDEL', KEYS[1], token)
      if claimed then
        redis.call('HSET', KEYS[1], mine, claimed.expires .. ' ' .. limit)
      end
      return extended
    end
  end
  redis.call('SET', KEYS[2], text)
  if claimed and how == 'q' then
    register(KEYS[3], member, micros)
  end
  return {fence, micros}
end
if how ~= '-' then
  register(KEYS[3], member, micros)
end
return -1 - (live.soonest - now)
