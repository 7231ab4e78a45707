-- Ends one tracked instance of ARGV[4]. When no code-owner sync is left, the
-- kept resets are handed out as jobs in push order. value = 1 if found.
begin()
local member = ARGV[4]
local expired = purge()
-- The highest instance still tracked (see instances()).
local _, top = instances(member)
local found = 0
if top > 0 then
  redis.call('ZREM', markers, member .. '#' .. top)
  marks[member .. '#' .. top] = nil
  marks_written = true
  found = 1
end

local jobs = {}
local n_live, last = live_code_owner()
if n_live == 0 then
  drain(jobs)
end
return finish_write('finished', found, last, jobs, expired)
