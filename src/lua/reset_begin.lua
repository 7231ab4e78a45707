-- The reset worker asks to run one push's reset. ARGV[4] oldrev, ARGV[5]
-- newrev, ARGV[6] args (used when the job was not tracked, as after a flag
-- flip). code 'run' with the entry id and the run's token, or 'wait' when a code-owner sync is
-- live: the entry then waits and the sync's finish enqueues it again.
begin()
local expired = purge()
local pick
for _, want in ipairs({ 'q', 'w' }) do
  for _, e in ipairs(list) do
    if not pick and e.st == want and e.old == ARGV[4] and e.new == ARGV[5] then
      pick = e
    end
  end
end
if not pick then
  pick = add_entry('q', ARGV[4], ARGV[5], ARGV[6])
end

local n_live, last = live_code_owner()
local code = 'run'
if n_live > 0 then
  pick.st = 'w'
  code = 'wait'
else
  pick.st = 'r'
  pick.dirty = '0'
  pick.dl = now + marker_ttl
end
save(pick)
-- due_at carries the run's token (its deadline): the finish of this run
-- presents it, so a stalled run that outlived its deadline cannot end a
-- newer run of the same entry.
local token = last
if code == 'run' then
  token = pick.dl
end
return finish_write(code, pick.id, token, {}, expired)
