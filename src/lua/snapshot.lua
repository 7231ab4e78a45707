-- Everything about one merge request, for operators and tests; writes nothing.
-- value = { legacy TTL ms (-2 absent, -1 none), now ms };
-- jobs = every entry as id, raw entry; expired = markers as member, deadline.
begin()
local markers_flat = redis.call('ZRANGE', markers, 0, -1, 'WITHSCORES')
local entries_flat = {}
for _, e in ipairs(entries()) do
  entries_flat[#entries_flat + 1] = e.id
  entries_flat[#entries_flat + 1] = encode(e)
end
local value = { redis.call('PTTL', legacy), now }
return reply('snapshot', value, 0, entries_flat, markers_flat)
