-- Shared by every lock script. It is prepended to a script, or inserted at the script's
-- `-- @helpers` line: what comes before that line is the script's hot path (acquiring a
-- free lock; heartbeat and release by the holder, with nobody waiting), which needs none of
-- these helpers and returns before they are even defined.
--
-- The keys of one lock name, all under one Redis Cluster hash tag:
--   lease    a lock's lease: a string with a PX expiry, the record
--              '<token> <limit> <pid> <label_len> <host_len> <name_len> <label><host><name>
--               <fence> <acquired_us>' (one line; the client sends all but the last two
--              fields, which the server fills in; lengths in bytes)
--            or, while the lock is being handed to a waiter, '@<client>' with a short PX;
--            a semaphore's permits: a hash, field <token> = '<expires_ms> ' .. record,
--            field '@<client>' = '<expires_ms> <limit>' (a permit handed to a waiter);
--            a lease written by version 1 of this library: a hash with fields token, label,
--            pid, host, fence, acquired_at_ms and name, read as a held lock until it expires.
--   fence    the fence counter: the last fence granted, a decimal integer without expiry.
--   queue    waiting clients (zset: '<trust><client id>' -> arrival in server microseconds),
--            with a PX renewed by every registration: trust is '1' when a publication that
--            nobody hears proves the client gone (its subscription is on the one server its
--            publications reach).
-- A client is handed a freed lock by a publication of the name's hash tag (its hex) on
-- '<prefix>wake:<client id>'.
--
-- The hot paths do only what they must. Everything else checks every field, so data this
-- library did not write is reported as corrupt, never taken for a lease. Errors caught with
-- redis.pcall are only ever the expected ones (a key of another type); any other error (an
-- ACL refusal, a read-only replica) is returned by the script as it came, so the client
-- sees what really went wrong. (Returned, not raised with error(): Redis 6 loses a raised
-- error's code.)

-- Fences stay below 2^53: Lua numbers are doubles, exact only up to there.
local MAX_FENCE = 9007199254740991
-- How long a freed lock or permit stays reserved for the waiter it was handed to.
local CLAIM_WINDOW_MS = 200
-- How long the queue of a name lasts after its last registration.
local REGISTRATION_MS = 6000

-- Server time: whole milliseconds and microseconds since the Unix epoch.
local function server_time()
  local time = redis.call('TIME')
  local micros = tonumber(time[1]) * 1000000 + tonumber(time[2])
  return math.floor(micros / 1000), micros
end

-- When the key at `key` expires, in server milliseconds since the epoch, given `now` (the
-- server's time) and what is left of it (`pttl`). PEXPIRETIME (Redis 7.0+) is the expiry the
-- server set, the same at every reading; older servers get the clock plus what is left,
-- which is off by as much as the server's cached clock lags its real one (milliseconds when
-- it is busy).
local function expiry_ms(key, now, pttl)
  local at = redis.pcall('PEXPIRETIME', key)
  if type(at) == 'number' and at > 0 then
    return at
  end
  return now + pttl
end

-- A lease record's fields, or nil and what is wrong with it.
local function parse_record(v)
  local token, limit, pid, ll, hl, nl, at = string.match(v,
    '^(%x+) (%d+) (%d+) (%d+) (%d+) (%d+) ()')
  if not token or #token ~= 32 or #pid > 10 or #limit > 5 then
    return nil, 'is not a lease record'
  end
  ll, hl, nl = tonumber(ll), tonumber(hl), tonumber(nl)
  local fence, acquired = string.match(v, '^ (%d+) (%d+)$', at + ll + hl + nl)
  if not fence or #fence > 16 or #acquired > 16 then
    return nil, 'is not a lease record'
  end
  return {
    token = token, fence = fence, acquired = math.floor(tonumber(acquired) / 1000),
    limit = tonumber(limit), pid = pid,
    label = string.sub(v, at, at + ll - 1), host = string.sub(v, at + ll, at + ll + hl - 1),
    name = string.sub(v, at + ll + hl, at + ll + hl + nl - 1),
  }
end

-- The name in a record's head, as a client sends it ('<token> <limit> <pid> <ll> <hl> <nl>
-- <label><host><name> ').
local function head_name(head)
  local ll, hl, nl, at = string.match(head, '^%x+ %d+ %d+ (%d+) (%d+) (%d+) ()')
  local start = at + tonumber(ll) + tonumber(hl)
  return string.sub(head, start, start + tonumber(nl) - 1)
end

-- The prefix of every client's channel (the key prefix, what precedes the hash tag of
-- `key`, and 'wake:') and the tag itself (the name's hex): what a hand-off publishes.
local function channel_of(key)
  local prefix, tag = string.match(key, '^([^{]*){(%x*)}')
  return prefix .. 'wake:', tag
end

-- A version 1 lease (a hash): nil when there is none, the lease table when it is readable,
-- or false and a description when the key holds something this library did not write.
local function read_lease_v1(key)
  local v = redis.call('HMGET', key, 'token', 'label', 'pid', 'host', 'fence', 'acquired_at_ms', 'name')
  local lease = {
    token = v[1], label = v[2], pid = v[3], host = v[4],
    fence = v[5], acquired = v[6], name = v[7], limit = 1,
  }
  if not lease.token or #lease.token ~= 32 or not string.match(lease.token, '^[0-9a-f]+$') then
    return false, 'the lease ' .. key .. ' has no valid owner token'
  end
  for _, field in ipairs({'pid', 'fence', 'acquired'}) do
    local value = lease[field]
    if not value or #value > 19 or not string.match(value, '^[0-9]+$') then
      return false, 'the lease ' .. key .. ' has no valid ' .. field
    end
  end
  for _, field in ipairs({'label', 'host', 'name'}) do
    if not lease[field] then
      return false, 'the lease ' .. key .. ' has no ' .. field
    end
  end
  local pttl = redis.call('PTTL', key)
  if pttl < 0 then
    return false, 'the lease ' .. key .. ' has no expiry'
  end
  lease.pttl = pttl
  return lease
end

-- The live entries of a semaphore's permits hash at `key` (expired ones are deleted when
-- `prune`): a table with `permits` (records, each with `expires` and `field`), `reserved`
-- (field -> {expires, limit}), `count`, `limit` (of the live entries), `soonest` and
-- `latest` expiry; or nil and a description of an entry this library did not write.
local function read_permits(key, now, prune)
  local flat = redis.call('HGETALL', key)
  local out = {permits = {}, reserved = {}, count = 0}
  for i = 1, #flat, 2 do
    local field, value = flat[i], flat[i + 1]
    local expires, rest = string.match(value, '^(%d+) (.*)$')
    local entry, limit
    if expires and string.byte(field, 1) == 64 then
      limit = tonumber(string.match(rest, '^(%d+)$'))
      entry = {expires = tonumber(expires), limit = limit}
    elseif expires then
      entry = parse_record(rest)
      if entry and entry.token ~= field then entry = nil end
      if entry then
        entry.expires, limit = tonumber(expires), entry.limit
      end
    end
    if not entry or not limit then
      return nil, 'the permit ' .. field .. ' of ' .. key .. ' is not a permit this library wrote'
    end
    if entry.expires <= now then
      if prune then redis.call('HDEL', key, field) end
    else
      out.count = out.count + 1
      out.limit = out.limit or limit
      if out.limit ~= limit then
        return nil, 'the permits of ' .. key .. ' disagree on their limit'
      end
      if not out.soonest or entry.expires < out.soonest then out.soonest = entry.expires end
      if not out.latest or entry.expires > out.latest then out.latest = entry.expires end
      if string.byte(field, 1) == 64 then
        out.reserved[field] = entry
      else
        entry.field = field
        out.permits[#out.permits + 1] = entry
      end
    end
  end
  return out
end

-- What is wrong with the fence counter at `key`, or nil when this library can count with it
-- (no counter, or an integer below 2^53 - 1). A counter is never written out of range here;
-- one that is was set by something else (an operator, another tool).
local function fence_counter_problem(key)
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then
    return nil
  end
  local fix = '; force_release on the lock replaces it with a fresh counter'
  if kind ~= 'string' then
    return 'the fence counter ' .. key .. ' holds a ' .. kind .. ', not a string' .. fix
  end
  local value = redis.call('GET', key)
  if #value > 20 or not string.match(value, '^%-?%d+$') then
    return 'the fence counter ' .. key .. ' is not an integer' .. fix
  end
  if tonumber(value) >= MAX_FENCE then
    return 'the fence counter ' .. key .. ' is at ' .. value ..
      ', out of the range of fences (below 2^53 = 9007199254740992)' .. fix
  end
  return nil
end

-- The fence of a grant at server time `micros`: max(counter + 1, micros), or nil and what is
-- wrong with the counter.
local function next_fence(key, micros)
  local problem = fence_counter_problem(key)
  if problem then
    return nil, problem
  end
  local counter = tonumber(redis.call('GET', key) or '0')
  if counter >= micros then
    return counter + 1
  end
  return micros
end

-- Restarts the fence counter at `key` at the server's time in microseconds, or at `floor`
-- (a fence, as decimal text) when that is higher and in range.
local function seed_fence_counter(key, floor)
  local _, micros = server_time()
  local seed = micros
  if floor and tonumber(floor) > seed and tonumber(floor) < MAX_FENCE then
    seed = tonumber(floor)
  end
  redis.call('SET', key, string.format('%d', seed))
end

-- Registers a client (`member`: its trust flag and id) as waiting, at the back of the
-- queue unless already in it.
local function register(queue, member, micros)
  redis.call('ZADD', queue, 'NX', micros, member)
  redis.call('PEXPIRE', queue, REGISTRATION_MS)
end

-- Takes the next waiting client off the queue (other than `skip`) and publishes the name's
-- tag on its channel: the client id, or nil when nobody waits, or nil and the error when
-- the server refuses the publication (an ACL without the channel), with the client put back
-- where it was. A client that nobody hears is skipped when its silence proves it gone
-- (trust '1': its subscription is on the one server its publications reach; on a cluster,
-- or behind Sentinel, it may not be).
local function wake_next(queue, lease, skip)
  local prefix, tag = channel_of(lease)
  while true do
    local head = redis.call('ZPOPMIN', queue)
    local member = head[1]
    if not member then
      return nil
    end
    local client = string.sub(member, 2)
    if client ~= skip then
      local heard = redis.pcall('PUBLISH', prefix .. client, tag)
      if type(heard) == 'table' then
        redis.call('ZADD', queue, head[2], member)
        return nil, heard
      end
      if heard > 0 or string.byte(member, 1) ~= 49 then
        return client
      end
    end
  end
end

-- Hands a freed lock to the next waiting client: reserves it for that client for the claim
-- window, or deletes it when nobody waits. Returns the server's error when it refused the
-- publication (the lock is then left as it was).
local function hand_off_lock(lease, queue, skip)
  local client, refused = wake_next(queue, lease, skip)
  if refused then
    return refused
  end
  if client then
    redis.call('SET', lease, '@' .. client, 'PX', CLAIM_WINDOW_MS)
  else
    redis.call('DEL', lease)
  end
end

-- Hands up to `slots` permits of a semaphore of `limit`, freed at `now`, to waiting
-- clients. Returns the server's error when it refused a publication.
local function hand_off_permits(lease, queue, now, slots, limit, skip)
  local handed = false
  for _ = 1, slots do
    local client, refused = wake_next(queue, lease, skip)
    if refused then
      return refused
    end
    if not client then
      break
    end
    redis.call('HSET', lease, '@' .. client, (now + CLAIM_WINDOW_MS) .. ' ' .. limit)
    handed = true
  end
  if handed and redis.call('PTTL', lease) < CLAIM_WINDOW_MS then
    redis.call('PEXPIRE', lease, CLAIM_WINDOW_MS)
  end
end

-- Deletes a permits hash without live entries; otherwise makes its expiry the latest entry's.
local function tidy_permits(lease, now)
  local live = read_permits(lease, now, true)
  if not live or live.count == 0 then
    if live then redis.call('DEL', lease) end
    return
  end
  redis.call('PEXPIRE', lease, live.latest - now)
end

-- The reply of a heartbeat or release whose token was not found at `key`: 0 (the lease is
-- lost), or {'corrupt', detail} when the key holds something this library did not write.
-- `v` is what redis.pcall('GET', key) gave: false, a string, or a WRONGTYPE error.
local function lost_or_corrupt(key, v)
  if type(v) == 'table' and string.sub(v.err, 1, 9) ~= 'WRONGTYPE' then
    return v
  end
  if type(v) == 'string' then
    if string.byte(v, 1) == 64 then
      return 0
    end
    local record, why = parse_record(v)
    if not record then
      return {'corrupt', 'the lease ' .. key .. ' ' .. why}
    end
    return 0
  end
  if type(v) == 'table' then
    local kind = redis.call('TYPE', key)['ok']
    if kind == 'hash' and redis.call('HEXISTS', key, 'token') == 1 then
      local lease, detail = read_lease_v1(key)
      if lease == false then
        return {'corrupt', detail}
      end
      return 0
    end
    if kind ~= 'hash' then
      return {'corrupt', 'the lease key ' .. key .. ' holds a ' .. kind .. ', not a lease'}
    end
  end
  return 0
end

-- Renews the permit of `token` in the semaphore at `key` for `ttl` ms, when the lease key is
-- a permits hash (`v` is what redis.pcall('GET', key) gave); otherwise diagnoses as
-- lost_or_corrupt. Returns the new expiry in ms, 0 (lost) or {'corrupt', detail}.
local function renew_permit(key, token, ttl, v)
  if type(v) ~= 'table' or string.sub(v.err, 1, 9) ~= 'WRONGTYPE'
      or redis.call('TYPE', key)['ok'] ~= 'hash' or redis.call('HEXISTS', key, 'token') == 1 then
    return lost_or_corrupt(key, v)
  end
  local value = redis.call('HGET', key, token)
  if not value then
    return 0
  end
  local now = server_time()
  local expires, rest = string.match(value, '^(%d+) (.*)$')
  if not expires or not parse_record(rest) then
    return {'corrupt', 'the permit ' .. token .. ' of ' .. key .. ' is not a permit this library wrote'}
  end
  if tonumber(expires) <= now then
    redis.call('HDEL', key, token)
    return 0
  end
  local renewed = now + tonumber(ttl)
  -- The key's expiry first: a refused PEXPIRE then changes nothing.
  if redis.call('PTTL', key) < tonumber(ttl) then
    local extended = redis.pcall('PEXPIRE', key, ttl)
    if type(extended) == 'table' then
      return extended
    end
  end
  redis.call('HSET', key, token, renewed .. ' ' .. rest)
  return renewed
end
