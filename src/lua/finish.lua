-- Ends one tracked instance of ARGV[4]. When no code-owner sync is left, the
-- kept resets are handed out as jobs in push order. value = 1 if found.
begin()
local member = ARGV[4]
local expired = purge()
local n, found = 1, 0
while marks[member .. '#' .. n] do
  n = n + 1
end
if n > 1 then
  redis.call('ZREM', markers, member .. '#' .. (n - 1))
  marks[member .. '#' .. (n - 1)] = nil
  found = 1
end

local jobs = {}
local n_live, last = live_code_owner()
if n_live == 0 then
  drain(jobs)
end
return finish_write('finished', found, last, jobs, expired)
