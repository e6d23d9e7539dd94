local meta = redis.call('HMGET', k('meta'), 'loaded', 'seq', 'closed')
if meta[1] ~= '1' then return {'0'} end
sweep(now_ms())
local seq = redis.call('HGET', k('meta'), 'seq') or '0'
local all = {}
if ARGV[3] == '1' then all = redis.call('HKEYS', k('seat')) end
return {'1', seq, meta[3] or '0', redis.call('HGETALL', k('count')), redis.call('HKEYS', k('held')),
  redis.call('SMEMBERS', k('sold')), all}
