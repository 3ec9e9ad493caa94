-- Reads the live leases of a name (one for a lock, every live permit of a semaphore),
-- without their tokens.
-- KEYS[1] lease
-- Returns {'ok', then for each lease: name, label, pid, host, fence, acquired_at_ms,
-- expires_at_ms, limit} (no lease: just {'ok'}) | {'corrupt', detail}
local now = server_time()
local kind = redis.call('TYPE', KEYS[1])['ok']
local out = {'ok'}
local function add(record, expires)
  for _, value in ipairs({record.name, record.label, record.pid, record.host, record.fence,
      record.acquired, expires, record.limit}) do
    out[#out + 1] = value
  end
end
if kind == 'string' then
  local v = redis.call('GET', KEYS[1])
  if string.byte(v, 1) ~= 64 then
    local record, why = parse_record(v)
    if not record then
      return {'corrupt', 'the lease ' .. KEYS[1] .. ' ' .. why}
    end
    local pttl = redis.call('PTTL', KEYS[1])
    if pttl < 0 then
      return {'corrupt', 'the lease ' .. KEYS[1] .. ' has no expiry'}
    end
    add(record, expiry_ms(KEYS[1], now, pttl))
  end
elseif kind == 'hash' then
  if redis.call('HEXISTS', KEYS[1], 'token') == 1 then
    local lease, detail = read_lease_v1(KEYS[1])
    if lease == false then
      return {'corrupt', detail}
    end
    add(lease, expiry_ms(KEYS[1], now, lease.pttl))
  else
    local live, detail = read_permits(KEYS[1], now, false)
    if not live then
      return {'corrupt', detail}
    end
    for _, permit in ipairs(live.permits) do
      add(permit, permit.expires)
    end
  end
elseif kind ~= 'none' then
  return {'corrupt', 'the lease key ' .. KEYS[1] .. ' holds a ' .. kind .. ', not a lease'}
end
return out
