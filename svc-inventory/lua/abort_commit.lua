local hid = ARGV[3]
local hk = hold_key(hid)
if redis.call('HGET', hk, 'status') ~= 'committing' then return {'STATUS'} end
redis.call('HSET', hk, 'status', 'active')
redis.call('ZREM', k('committing'), hid)
redis.call('ZADD', k('exp'), redis.call('HGET', hk, 'expires'), hid)
return {'OK'}
