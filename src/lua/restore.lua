-- Puts back queued entries whose enqueue failed. ARGV[4..] entry ids.
-- value = how many were put back.
begin()
local back = 0
for i = 4, #ARGV do
  local e = find_entry(ARGV[i])
  if e and e.st == 'q' then
    e.st = 'w'
    save(e)
    back = back + 1
  end
end
return finish_write('restored', back)
