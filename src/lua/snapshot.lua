-- Everything about one merge request, for operators and tests; writes nothing.
-- value = { legacy TTL ms (-2 absent, -1 none), now ms };
-- jobs = every entry as id, raw entry; expired = markers as member, deadline.
begin()
local markers_flat = marker_rows
local entries_flat = {}
for _, e in ipairs(list) do
  entries_flat[#entries_flat + 1] = e.id
  entries_flat[#entries_flat + 1] = encode(e)
end
local value = { redis.call('PTTL', legacy), now }
return { 'snapshot', value, 0, entries_flat, markers_flat, {} }
