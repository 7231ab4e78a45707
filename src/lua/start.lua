-- Tracks one sync. ARGV[4] member. A member ending in ':create' is a set
-- member (a retried request starts it again); any other is counted, so the
-- same push tracked twice needs two finishes. value = instances now tracked.
begin()
local member = ARGV[4]
local expired = purge()
local deadline = now + marker_ttl
local count
if string.sub(member, -7) == ':create' then
  redis.call('ZADD', markers, deadline, member .. '#1')
  count = 1
else
  local n = 1
  while redis.call('ZSCORE', markers, member .. '#' .. n) do
    n = n + 1
  end
  redis.call('ZADD', markers, deadline, member .. '#' .. n)
  count = n
end

-- A reset that is running now reads rules this sync is about to rewrite.
if string.sub(member, 1, 11) == 'code_owner:' then
  for _, e in ipairs(entries()) do
    if e.st == 'r' and e.dirty == '0' then
      e.dirty = '1'
      save(e)
    end
  end
end
return finish_write('started', count, 0, {}, expired)
