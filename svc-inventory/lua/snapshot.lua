local meta = redis.call('HMGET', k('meta'), 'loaded', 'seq', 'closed')
if meta[1] ~= '1' then return {'0'} end
sweep(now_ms())
local seq = redis.call('HGET', k('meta'), 'seq') or '0'
local all = {}
if ARGV[3] == '1' then all = redis.call('HKEYS', k('seat')) end
-- Seats owed to a waiting list are shown held: nobody else can take them.
-- (Listed apart as well: no commit can be finishing on them, so the reconciler counts them.)
local held, owed = redis.call('HKEYS', k('held')), {}
for _, t in ipairs(redis.call('SMEMBERS', k('tiers'))) do
  if redis.call('HGET', k('count'), t .. ':owed') ~= '0' then
    for _, s in ipairs(redis.call('ZRANGE', k('owed:' .. t), 0, -1)) do
      held[#held + 1] = s
      owed[#owed + 1] = s
    end
  end
end
return {'1', seq, meta[3] or '0', redis.call('HGETALL', k('count')), held,
  redis.call('SMEMBERS', k('sold')), all, owed}
