-- The reset worker's run of entry ARGV[4] ended; ARGV[5] is '1' when the work
-- completed, '0' when it raised; ARGV[6] the run's token from reset_begin
-- ('' skips the check). A completed run with no code-owner sync
-- overlapping it ends the entry; otherwise the entry runs again once the
-- syncs are over. A raised run ends the entry: the job's own retry re-runs it.
begin()
local expired = purge()
local id = ARGV[4]
local e = find_entry(id)
local token = ARGV[6]
if not e or e.st ~= 'r' or (token and token ~= '' and string.format('%d', e.dl) ~= token) then
  -- Cleared after a merge, or revived after this run passed its deadline
  -- (and maybe begun again by another worker: the token tells runs apart).
  return finish_write('gone', 0, 0, {}, expired)
end

local n_live, last = live_code_owner()
local code, jobs = 'done', {}
local ends = ARGV[5] ~= '1' or (e.dirty == '0' and n_live == 0)
if ends then
  if ARGV[5] ~= '1' then
    code = 'dropped'
  end
  end_entry(e)
else
  e.st = 'w'
  e.dirty = '0'
  save(e)
  code = 'rerun'
  if n_live == 0 then
    drain(jobs)
  end
end
return finish_write(code, e.id, last, jobs, expired)
