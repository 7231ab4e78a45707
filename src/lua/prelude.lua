-- Shared head of every approval_sync script.
--
-- KEYS[1] legacy flag (string), KEYS[2] markers (zset member -> deadline ms),
-- KEYS[3] resets (hash: "seq" -> last id, "<id>" -> entry).
-- ARGV[1] clock override in ms ("" = the server clock), ARGV[2] marker TTL ms,
-- ARGV[3] pending TTL ms; ARGV[4..] belong to the operation.
--
-- Entries are "state|deadline|dirty|oldrev|newrev|args": state w (waiting for
-- the code-owner syncs to end), q (enqueued), r (running); dirty is 1 when a
-- code-owner sync started while the reset ran, so its run does not count.
-- Two more fields: "seq" numbers entries (it starts from the clock in
-- microseconds, so an id is not reused after the hash was deleted) and "idx" is the score this merge
-- request holds in the sweep's index, present while entries wait.

-- Redis 6.2 replicates scripts verbatim unless told otherwise; TIME needs effects.
if redis.replicate_commands then
  redis.replicate_commands()
end

-- KEYS[4], when given, is the sweep's index: outside a Cluster it shares the
-- server, so the index changes in the same step. On a Cluster it lives in
-- another slot and the caller applies the change this script returns.
local legacy, markers, resets, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local marker_ttl = tonumber(ARGV[2])
local pending_ttl = tonumber(ARGV[3])
local now, now_us

local function expect(key, kind)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= kind then
    error('ASWRONGTYPE ' .. key .. ' holds a ' .. t .. ', expected a ' .. kind, 0)
  end
end

-- Every script's first step: read the clock and check the keys' types. The
-- read of a merge request with nothing tracked skips it (the common case).
local function begin()
  now = tonumber(ARGV[1])
  if now then
    now_us = now * 1000
  else
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  expect(legacy, 'string')
  expect(markers, 'zset')
  expect(resets, 'hash')
end

local function decode(id, raw)
  local st, dl, dirty, old, new, args =
    string.match(raw, '^(%a)|(%d+)|(%d)|([^|]*)|([^|]*)|(.*)$')
  if not st then
    error('ASCORRUPT ' .. resets .. ' field ' .. id .. ' is not an entry', 0)
  end
  return { id = tonumber(id), st = st, dl = tonumber(dl), dirty = dirty,
           old = old, new = new, args = args }
end

local function encode(e)
  return e.st .. '|' .. string.format('%d', e.dl) .. '|' .. e.dirty .. '|'
    .. e.old .. '|' .. e.new .. '|' .. e.args
end

local function save(e)
  redis.call('HSET', resets, e.id, encode(e))
end

-- Every entry, oldest push first.
local function entries()
  local flat = redis.call('HGETALL', resets)
  local list = {}
  for i = 1, #flat, 2 do
    if flat[i] ~= 'seq' and flat[i] ~= 'idx' then
      list[#list + 1] = decode(flat[i], flat[i + 1])
    end
  end
  table.sort(list, function(a, b) return a.id < b.id end)
  return list
end

-- Live code-owner markers: how many, and the latest deadline among them.
local function live_code_owner()
  local rows = redis.call('ZRANGEBYSCORE', markers, '(' .. now, '+inf', 'WITHSCORES')
  local n, last = 0, 0
  for i = 1, #rows, 2 do
    if string.sub(rows[i], 1, 11) == 'code_owner:' then
      n = n + 1
      last = math.max(last, tonumber(rows[i + 1]))
    end
  end
  return n, last
end

-- Markers past their deadline belong to a process that died; drop them. A
-- reset past its deadline lost its job (the process died before or after
-- perform_async) or its worker (killed mid-run): it waits to be enqueued
-- again (fail closed; a late finish of the old run finds it not running).
-- Returns what expired, so the caller can log each one.
local function purge()
  local dead = redis.call('ZRANGEBYSCORE', markers, '-inf', now)
  if #dead > 0 then
    redis.call('ZREMRANGEBYSCORE', markers, '-inf', now)
  end
  for _, e in ipairs(entries()) do
    if e.st ~= 'w' and e.dl <= now then
      e.st = 'w'
      e.dirty = '0'
      save(e)
      dead[#dead + 1] = 'reset_approvals:' .. e.old .. ':' .. e.new
    end
  end
  return dead
end

-- Waiting entries become queued; their ids and args go to out, in push order.
local function drain(list, out)
  for _, e in ipairs(list) do
    if e.st == 'w' then
      e.st = 'q'
      e.dl = now + marker_ttl
      save(e)
      out[#out + 1] = e.id
      out[#out + 1] = e.args
    end
  end
end

local function add_entry(st, old, new, args)
  if redis.call('HEXISTS', resets, 'seq') == 0 then
    redis.call('HSET', resets, 'seq', string.format('%d', now_us))
  end
  local id = redis.call('HINCRBY', resets, 'seq', 1)
  local e = { id = id, st = st, dl = now + marker_ttl, dirty = '0',
              old = old, new = new, args = args }
  save(e)
  return e
end

-- Keys always carry a TTL, set in the same step that writes them. Markers
-- outlive their latest deadline by one more marker TTL, so the call that
-- finds a dead sync's marker can still name it in the log; resets outlive
-- the markers.
local function touch()
  local top = redis.call('ZRANGE', markers, -1, -1, 'WITHSCORES')
  if top[2] then
    redis.call('PEXPIRE', markers, math.max(1, tonumber(top[2]) - now + marker_ttl))
  end
  local meta = redis.call('HEXISTS', resets, 'seq') + redis.call('HEXISTS', resets, 'idx')
  if redis.call('HLEN', resets) <= meta then
    redis.call('DEL', resets)
  else
    redis.call('PEXPIRE', resets, pending_ttl)
  end
end

local function waiting(list)
  for _, e in ipairs(list) do
    if e.st == 'w' then
      return true
    end
  end
  return false
end

-- Applies an index change here when the index key was given; otherwise
-- returns it for the caller to apply.
local function settle_index(change)
  if not index or not change[1] then
    return change
  end
  -- A damaged index must not stop this merge request's step, nor leave it
  -- half done: hand the change back, and the caller's update reports it.
  local t = redis.call('TYPE', index)['ok']
  if t ~= 'none' and t ~= 'zset' then
    return change
  end
  local id = string.match(legacy, '^mr_(%d+)_cannot_merge$')
  if change[1] == 'add' then
    redis.call('ZADD', index, change[2], id)
    redis.call('PEXPIRE', index, pending_ttl)
  elseif redis.call('ZSCORE', index, id) == change[2] then
    redis.call('ZREM', index, id)
  end
  return {}
end

-- Keeps the sweep's index in step: while any entry exists, the merge request
-- is indexed at the earliest time one may need recovery: a waiting entry when
-- the last live sync's deadline passes (now when none is live), a queued or
-- running one at its own deadline (its job or worker may have died). The
-- change is {} for none, { 'add', due } or { 'del', score last written }.
local function index_change()
  local idx = redis.call('HGET', resets, 'idx')
  local list = entries()
  if #list == 0 then
    if idx then
      redis.call('HDEL', resets, 'idx')
      return settle_index({ 'del', idx })
    end
    return {}
  end
  local _, last = live_code_owner()
  local due
  for _, e in ipairs(list) do
    local at = e.dl
    if e.st == 'w' then
      at = math.max(last, now)
    end
    if not due or at < due then
      due = at
    end
  end
  -- A held time still ahead and early enough stands. One already past is
  -- written again (ZADD is idempotent): if an earlier index write was lost
  -- (a crash before the caller's update on a Cluster, a damaged index key),
  -- the next call for the merge request repairs it.
  local held = idx and tonumber(idx)
  if held and held > now and held <= due then
    return {}
  end
  due = string.format('%d', due)
  redis.call('HSET', resets, 'idx', due)
  return settle_index({ 'add', due })
end

-- Every write ends here: index first, then TTLs (which may delete the hash).
-- Reply: { code, value, due_at, jobs, expired, index change }.
local function finish_write(code, value, due_at, jobs, expired)
  local change = index_change()
  touch()
  return { code, value or 0, due_at or 0, jobs or {}, expired or {}, change }
end

local function reply(code, value, due_at, jobs, expired)
  return { code, value or 0, due_at or 0, jobs or {}, expired or {}, {} }
end
