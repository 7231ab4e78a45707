-- Forgets a merge request's markers and kept resets (after a merge or close).
-- value = kept resets dropped. It decodes no entry, so it also clears a
-- merge request whose hash holds a damaged one.
checked(redis.pcall('ZCARD', markers), markers, 'zset')
local fields = checked(redis.pcall('HKEYS', resets), resets, 'hash')
local dropped = 0
for _, f in ipairs(fields) do
  if f == 'idx' then
    idx = redis.call('HGET', resets, 'idx')
  elseif f ~= 'seq' then
    dropped = dropped + 1
  end
end
redis.call('DEL', markers, resets)
local change = {}
if idx then
  change = { 'del', idx }
end
return { 'cleared', dropped, 0, {}, {}, settle_index(change) }
