-- The sweep's index of merge requests with kept resets. KEYS[1] the index.
-- ARGV[1] 'add': ARGV[2] id, ARGV[3] due ms, ARGV[4] TTL ms.
-- ARGV[1] 'settle': ARGV[2] id, ARGV[3] score the sweep read, ARGV[4] TTL ms,
--   ARGV[5] new due ms or '' when nothing is left. A score that changed since
--   the sweep read it belongs to a newer schedule and stays.
local index, mode, id = KEYS[1], ARGV[1], ARGV[2]
local t = redis.call('TYPE', index)['ok']
if t ~= 'none' and t ~= 'zset' then
  error('ASWRONGTYPE ' .. index .. ' holds a ' .. t .. ', expected a zset', 0)
end
if mode == 'add' then
  redis.call('ZADD', index, ARGV[3], id)
elseif redis.call('ZSCORE', index, id) == ARGV[3] then
  if ARGV[5] == '' then
    redis.call('ZREM', index, id)
  else
    redis.call('ZADD', index, ARGV[5], id)
  end
end
if redis.call('EXISTS', index) == 1 then
  redis.call('PEXPIRE', index, ARGV[4])
end
return redis.call('ZCARD', index)
