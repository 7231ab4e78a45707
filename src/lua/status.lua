-- Answers every read in one step. ARGV[4] member to look for ('' for none),
-- ARGV[5] its oldrev and ARGV[6] its newrev when it names a reset.
-- value = { legacy, live markers, blocking entries, member syncing };
-- writes only when kept resets are due, which it then hands out as jobs.
--
-- The script is assembled around two marker comments (prelude, writes; see
-- src/scripts.rs), so the common reads define only what they use.
if redis.call('EXISTS', KEYS[2], KEYS[3]) == 0 then
  -- Nothing tracked (the common case): answered before the prelude runs,
  -- with the legacy flag alone (the caller reads an integer as idle).
  return redis.call('EXISTS', KEYS[1])
end
--[[prelude]]
begin()
local jobs, change, expired = {}, {}, {}
local n_live = live_code_owner()
local revived = false
for _, e in ipairs(list) do
  revived = revived or (e.st ~= 'w' and e.dl <= now)
end
if revived or (n_live == 0 and waiting()) then
  -- Rare: a sync or a reset worker died, or an enqueue failed. Recover here.
  --[[writes]]
  expired = purge()
  if n_live == 0 then
    drain(jobs)
  end
  change = index_change()
  touch()
end

local blocking, member_hit = 0, 0
local member = ARGV[4]
local is_reset = string.sub(member, 1, 16) == 'reset_approvals:'
for _, e in ipairs(list) do
  if e.st == 'w' or e.dl > now then
    blocking = blocking + 1
    if is_reset and e.old == ARGV[5] and e.new == ARGV[6] then
      member_hit = 1
    end
  end
end

local n_markers = 0
local prefix = member .. '#'
for m, dl in pairs(marks) do
  if dl > now then
    n_markers = n_markers + 1
    if member ~= '' and string.sub(m, 1, #prefix) == prefix then
      member_hit = 1
    end
  end
end

local value = { redis.call('EXISTS', legacy), n_markers, blocking, member_hit }
return { 'status', value, 0, jobs, expired, change }
