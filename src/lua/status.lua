-- Answers every read in one step. ARGV[4] member to look for ('' for none),
-- ARGV[5] its oldrev and ARGV[6] its newrev when it names a reset.
-- value = { legacy, live markers, blocking entries, member syncing };
-- writes only when kept resets are due, which it then hands out as jobs.
if redis.call('EXISTS', markers, resets) == 0 then
  -- Nothing tracked: no clock, no type checks, one more command.
  return { 'status', { redis.call('EXISTS', legacy), 0, 0, 0 }, 0, {}, {}, {} }
end
begin()
local list = entries()
local jobs, change, expired = {}, {}, {}
local n_live = live_code_owner()
local revived = false
for _, e in ipairs(list) do
  revived = revived or (e.st ~= 'w' and e.dl <= now)
end
if revived or (n_live == 0 and waiting(list)) then
  -- Rare: a sync or a reset worker died, or an enqueue failed. Recover here.
  expired = purge()
  list = entries()
  if n_live == 0 then
    drain(list, jobs)
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

local live = redis.call('ZRANGEBYSCORE', markers, '(' .. now, '+inf')
if member ~= '' then
  local prefix = member .. '#'
  for _, m in ipairs(live) do
    if string.sub(m, 1, #prefix) == prefix then
      member_hit = 1
    end
  end
end

local value = { redis.call('EXISTS', legacy), #live, blocking, member_hit }
return { 'status', value, 0, jobs, expired, change }
