-- Keeps one push's reset. ARGV[4] oldrev ('' when none), ARGV[5] newrev,
-- ARGV[6] the worker's args as JSON. Decided and stored in one step, so a
-- sync finishing in between cannot strand it. value = entry id.
begin()
local expired = purge()
local n_live, last = live_code_owner()
local code, jobs = 'enqueue', {}
if n_live > 0 then
  add_entry('w', ARGV[4], ARGV[5], ARGV[6])
  code = 'kept'
else
  add_entry('w', ARGV[4], ARGV[5], ARGV[6])
  drain(jobs)
end
return finish_write(code, 0, last, jobs, expired)
