-- Forgets a merge request's markers and kept resets (after a merge or close).
-- value = kept resets dropped.
begin()
local dropped = #list
redis.call('DEL', markers, resets)
local change = {}
if idx then
  change = { 'del', idx }
end
return { 'cleared', dropped, 0, {}, {}, settle_index(change) }
