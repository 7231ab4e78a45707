-- The write half of the prelude: every script that writes includes it
-- after prelude.lua; the status script only on its rare recovery path.
--
-- Changes to the resets hash are made on the copy and written together by
-- touch() at the end of the step: the changed fields in HSETs of up to 1,000
-- arguments, the entries that ended in HDELs, or one DEL when none is left.
-- Markers are written at once (ZADD, ZREM), their TTL at the end.

-- Entries changed in this step (written by touch()), and ids that ended.
local changed = {}
local ended = {}
local meta_changed = false

local function encode(e)
  return e.st .. '|' .. string.format('%d', e.dl) .. '|' .. e.dirty .. '|'
    .. e.old .. '|' .. e.new .. '|' .. e.args
end

local function field(id)
  return string.format('%d', id)
end

local function save(e)
  changed[e] = true
end

local function find_entry(id)
  id = tonumber(id)
  for _, e in ipairs(list) do
    if e.id == id then
      return e
    end
  end
end

-- The instances of a member in the copy: how many, and the highest number
-- among them. Numbers can have gaps: a lower instance's process may have
-- died and purge() dropped it.
local function instances(member)
  local prefix, count, top = member .. '#', 0, 0
  for m in pairs(marks) do
    if string.sub(m, 1, #prefix) == prefix then
      count = count + 1
      top = math.max(top, tonumber(string.match(string.sub(m, #prefix + 1), '^%d+$') or '0'))
    end
  end
  return count, top
end

-- Ends an entry: gone from the copy now, from Redis in touch().
local function end_entry(e)
  for i, x in ipairs(list) do
    if x == e then
      table.remove(list, i)
      break
    end
  end
  changed[e] = nil
  ended[#ended + 1] = field(e.id)
end

-- Markers past their deadline belong to a process that died; drop them. A
-- reset past its deadline lost its job (the process died before or after
-- perform_async) or its worker (killed mid-run): it waits to be enqueued
-- again (fail closed; a late finish of the old run finds it not running).
-- Returns what expired, so the caller can log each one.
local function purge()
  local dead = {}
  for i = 1, #marker_rows, 2 do
    local m = marker_rows[i]
    if marks[m] and marks[m] <= now then
      dead[#dead + 1] = m
      marks[m] = nil
    end
  end
  if #dead > 0 then
    redis.call('ZREMRANGEBYSCORE', markers, '-inf', now)
    marks_written = true
  end
  for _, e in ipairs(list) do
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
local function drain(out)
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
  -- Above the last id given and every id present, whatever the hash holds.
  local id = math.max(tonumber(seq) or now_us, list[#list] and list[#list].id or 0) + 1
  seq = field(id)
  meta_changed = true
  local e = { id = id, st = st, dl = now + marker_ttl, dirty = '0',
              old = old, new = new, args = args }
  list[#list + 1] = e
  save(e)
  return e
end

-- One command on the resets hash per 1,000 arguments (an even number, so
-- field-value pairs stay whole): unpack() has a limit, and a merge request
-- may keep many resets.
local function send(cmd, args)
  for i = 1, #args, 1000 do
    redis.call(cmd, resets, unpack(args, i, math.min(i + 999, #args)))
  end
end

-- Writes the copy's changes to the resets hash. Keys always carry a TTL,
-- set in the same step that writes them: resets outlive the markers, and
-- markers outlive their latest deadline by one more marker TTL, so the call
-- that finds a dead sync's marker can still name it in the log. The
-- markers' TTL is set whenever this step wrote them.
local function touch()
  if #list > 0 then
    local fields = {}
    if meta_changed and seq then
      fields[#fields + 1] = 'seq'
      fields[#fields + 1] = seq
    end
    if meta_changed and idx then
      fields[#fields + 1] = 'idx'
      fields[#fields + 1] = idx
    end
    for _, e in ipairs(list) do
      if changed[e] then
        fields[#fields + 1] = field(e.id)
        fields[#fields + 1] = encode(e)
      end
    end
    send('HSET', fields)
    send('HDEL', ended)
    redis.call('PEXPIRE', resets, pending_ttl)
    hash_exists = true
  elseif hash_exists then
    redis.call('DEL', resets)
    hash_exists, seq, idx = false, nil, nil
  end
  changed, ended, meta_changed = {}, {}, false
  local top
  for _, dl in pairs(marks) do
    if not top or dl > top then
      top = dl
    end
  end
  if top and marks_written then
    redis.call('PEXPIRE', markers, math.max(1, top - now + marker_ttl))
  end
  marks_written = false
end

-- Applies an index change here when the index key was given; otherwise
-- returns it for the caller to apply.
local function settle_index(change)
  if not index or not change[1] then
    return change
  end
  -- A damaged index must not stop this merge request's step, nor leave it
  -- half done: hand the change back, and the caller's update reports it.
  local id = string.match(legacy, '^mr_(%d+)_cannot_merge$')
  if change[1] == 'add' then
    if failed(redis.pcall('ZADD', index, change[2], id)) then
      return change
    end
    redis.call('PEXPIRE', index, pending_ttl)
  else
    local held = redis.pcall('ZSCORE', index, id)
    if failed(held) then
      return change
    end
    if held == change[2] then
      redis.call('ZREM', index, id)
    end
  end
  return {}
end

-- Keeps the sweep's index in step: while any entry exists, the merge request
-- is indexed at the earliest time one may need recovery: a waiting entry when
-- the last live sync's deadline passes (now when none is live), a queued or
-- running one at its own deadline (its job or worker may have died). The
-- change is {} for none, { 'add', due } or { 'del', score last written }.
local function index_change()
  if #list == 0 then
    if idx then
      -- touch() deletes the hash, "idx" with it.
      local held = idx
      idx = nil
      return settle_index({ 'del', held })
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
  idx = string.format('%d', due)
  meta_changed = true
  return settle_index({ 'add', idx })
end

-- Every write ends here: index first, then the hash and the TTLs.
-- Reply: { code, value, due_at, jobs, expired, index change }.
local function finish_write(code, value, due_at, jobs, expired)
  local change = index_change()
  touch()
  return { code, value or 0, due_at or 0, jobs or {}, expired or {}, change }
end
