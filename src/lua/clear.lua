-- Forgets a merge request's markers and kept resets (after a merge or close).
-- value = kept resets dropped.
local dropped = #entries()
redis.call('DEL', markers, resets)
return reply('cleared', dropped)
