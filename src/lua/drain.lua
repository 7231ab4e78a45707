-- Hands out kept resets whose syncs are over (lazy recovery and the sweep).
-- value = entries still waiting after this step; due_at = when they can go.
begin()
local expired = purge()
local list = entries()
local jobs = {}
local n_live, last = live_code_owner()
if n_live == 0 then
  drain(list, jobs)
end
local left = 0
for _, e in ipairs(list) do
  if e.st == 'w' then
    left = left + 1
  end
end
return finish_write('drained', left, last, jobs, expired)
