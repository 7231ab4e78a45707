-- Hands out kept resets whose syncs are over (lazy recovery and the sweep).
-- ARGV[4] is the index score the sweep read ('' otherwise): when nothing is
-- left behind it (the merge request was cleared, or its hash expired), that
-- index entry goes too, in this step.
-- value = entries still waiting after this step; due_at = when they can go.
begin()
local expired = purge()
local jobs = {}
local n_live, last = live_code_owner()
if n_live == 0 then
  drain(jobs)
end
local left = 0
for _, e in ipairs(list) do
  if e.st == 'w' then
    left = left + 1
  end
end
local out = finish_write('drained', left, last, jobs, expired)
local seen = ARGV[4]
if seen and seen ~= '' and not out[6][1] and not hash_exists then
  out[6] = settle_index({ 'del', seen })
end
return out
