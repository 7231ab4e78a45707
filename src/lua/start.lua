-- Tracks one sync. ARGV[4] member. A member ending in ':create' is a set
-- member (a retried request starts it again); any other is counted, so the
-- same push tracked twice needs two finishes. value = instances of the member
-- now tracked.
begin()
local member = ARGV[4]
local expired = purge()
local deadline = now + marker_ttl
local count = 1
if string.sub(member, -7) ~= ':create' then
  while marks[member .. '#' .. count] do
    count = count + 1
  end
end
redis.call('ZADD', markers, deadline, member .. '#' .. count)
marks[member .. '#' .. count] = deadline
marks_written = true

-- A reset that is running now reads rules this sync is about to rewrite.
if string.sub(member, 1, 11) == 'code_owner:' then
  for _, e in ipairs(list) do
    if e.st == 'r' and e.dirty == '0' then
      e.dirty = '1'
      save(e)
    end
  end
end
local tracked = instances(member)
return finish_write('started', tracked, 0, {}, expired)
