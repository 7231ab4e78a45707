-- Ends one tracked instance of ARGV[4]. When no code-owner sync is left, the
-- kept resets are handed out as jobs in push order. value = 1 if found.
begin()
local member = ARGV[4]
local expired = purge()
-- The highest instance still tracked: a lower one may be gone already (its
-- process died and purge() dropped it), so the numbers can have gaps.
local prefix, top = member .. '#', 0
for m in pairs(marks) do
  if string.sub(m, 1, #prefix) == prefix then
    top = math.max(top, tonumber(string.match(string.sub(m, #prefix + 1), '^%d+$') or '0'))
  end
end
local found = 0
if top > 0 then
  redis.call('ZREM', markers, prefix .. top)
  marks[prefix .. top] = nil
  marks_written = true
  found = 1
end

local jobs = {}
local n_live, last = live_code_owner()
if n_live == 0 then
  drain(jobs)
end
return finish_write('finished', found, last, jobs, expired)
