-- Deletes whatever the lease key holds (a lock's lease, every permit of a semaphore, a
-- version 1 lease, a reservation, or corrupt data) and hands the freed slots to waiting
-- clients. The fence counter stays, so the next holder still gets a higher fence; only a
-- counter that acquire cannot count with (foreign data, or out of range) is replaced by a
-- fresh one, above the fence of every lease removed here.
-- KEYS[1] lease, KEYS[2] fence counter, KEYS[3] queue; ARGV[1] name
-- Returns {status} or {status, detail} when the fence counter was replaced (detail says what
-- was wrong with it). status: 'ok' (a live lease was removed) | 'free' | 'cleared' (corrupt
-- data removed: an unreadable record, or one that claims to be another lock's)
local now = server_time()
local kind = redis.call('TYPE', KEYS[1])['ok']
local status = 'free'
local top
local limit = 1
local function saw(record)
  if record.name ~= ARGV[1] then
    if status == 'free' then status = 'cleared' end
    return
  end
  status = 'ok'
  if not top or tonumber(record.fence) > tonumber(top) then top = record.fence end
end
if kind == 'string' then
  local v = redis.call('GET', KEYS[1])
  if string.byte(v, 1) ~= 64 then
    local record = parse_record(v)
    if record then saw(record) else status = 'cleared' end
  end
elseif kind == 'hash' then
  if redis.call('HEXISTS', KEYS[1], 'token') == 1 then
    local lease = read_lease_v1(KEYS[1])
    if lease then saw(lease) else status = 'cleared' end
  else
    local live = read_permits(KEYS[1], now, false)
    if not live then
      status = 'cleared'
    else
      for _, permit in ipairs(live.permits) do saw(permit) end
      limit = live.limit or 1
    end
  end
elseif kind ~= 'none' then
  status = 'cleared'
end
if kind ~= 'none' then
  redis.call('DEL', KEYS[1])
end
local problem = fence_counter_problem(KEYS[2])
if problem then
  seed_fence_counter(KEYS[2], top)
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  -- A refused publication leaves the name free and the waiters queued: they look again
  -- within their safety wait.
  if limit == 1 then
    hand_off_lock(KEYS[1], KEYS[3], nil)
  else
    hand_off_permits(KEYS[1], KEYS[3], now, limit, limit, nil)
  end
end
return {status, problem}
