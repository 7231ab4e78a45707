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
-- microseconds, so an id is not reused after the hash was deleted) and "idx"
-- is the score this merge request holds in the sweep's index, present while
-- entries wait.
--
-- A script reads the two tracking keys once, in begin(), and works on that
-- copy (see writes.lua for how changes reach Redis), so later steps of the
-- same script never read Redis again.

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

-- The copy: markers as read (ascending deadline) and as they stand now
-- (member -> deadline), whether this step wrote them, the entries oldest
-- push first, the hash's fields.
local marker_rows = {}
local marks = {}
local list = {}
local seq, idx
local hash_exists = false
local marks_written = false

-- A reply of redis.pcall that is an error.
local function failed(reply)
  return type(reply) == 'table' and reply.err ~= nil
end

-- Checks the first read of a tracking key: a key of another type stops the
-- script before it wrote anything, with an error that names the key.
local function checked(reply, key, kind)
  if failed(reply) then
    if string.find(reply.err, 'WRONGTYPE', 1, true) then
      local t = redis.call('TYPE', key)['ok']
      error('ASWRONGTYPE ' .. key .. ' holds a ' .. t .. ', expected a ' .. kind, 0)
    end
    error(reply.err, 0)
  end
  return reply
end

-- A whole number below 2^53 written without leading zeros, so the number
-- read back names the same value; nil for anything else.
local function whole(text)
  local n = tonumber(text)
  if n and n >= 0 and n < 9007199254740992 and string.format('%d', n) == text then
    return n
  end
end

-- Ids and deadlines are whole numbers (see whole()), states w, q or r.
local function decode(id, raw)
  local st, dl, dirty, old, new, args =
    string.match(raw, '^([wqr])|(%d+)|([01])|([^|]*)|([^|]*)|(.*)$')
  local n, deadline = whole(id), whole(dl or '')
  if not st or not n or n < 1 or not deadline then
    error('ASCORRUPT ' .. resets .. ' field ' .. id .. ' is not an entry', 0)
  end
  return { id = n, st = st, dl = deadline, dirty = dirty,
           old = old, new = new, args = args }
end

-- Every script's first step: read the clock and both tracking keys.
local function begin()
  now = tonumber(ARGV[1])
  if now then
    now_us = now * 1000
  else
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  marker_rows = checked(redis.pcall('ZRANGE', markers, 0, -1, 'WITHSCORES'), markers, 'zset')
  for i = 1, #marker_rows, 2 do
    local deadline = whole(marker_rows[i + 1])
    if not deadline then
      error('ASCORRUPT ' .. markers .. ' member ' .. marker_rows[i] .. ' has no whole deadline', 0)
    end
    marks[marker_rows[i]] = deadline
  end
  local flat = checked(redis.pcall('HGETALL', resets), resets, 'hash')
  hash_exists = #flat > 0
  for i = 1, #flat, 2 do
    local f = flat[i]
    if f == 'seq' then
      seq = flat[i + 1]
      if not whole(seq) then
        error('ASCORRUPT ' .. resets .. ' field seq is not a whole number', 0)
      end
    elseif f == 'idx' then
      idx = flat[i + 1]
    else
      list[#list + 1] = decode(f, flat[i + 1])
    end
  end
  if #list > 1 then
    table.sort(list, function(a, b) return a.id < b.id end)
  end
end

-- Live code-owner markers: how many, and the latest deadline among them.
local function live_code_owner()
  local n, last = 0, 0
  for m, dl in pairs(marks) do
    if dl > now and string.sub(m, 1, 11) == 'code_owner:' then
      n = n + 1
      if dl > last then
        last = dl
      end
    end
  end
  return n, last
end

local function waiting()
  for _, e in ipairs(list) do
    if e.st == 'w' then
      return true
    end
  end
  return false
end

