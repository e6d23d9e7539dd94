local now = now_ms()
sweep(now)
local hid = ARGV[3]
local hk = hold_key(hid)
local status = redis.call('HGET', hk, 'status')
if not status then return {'NOT_FOUND'} end
if status ~= 'active' then return {'STATUS', status} end
redis.call('HSET', hk, 'status', 'committing')
redis.call('ZREM', k('exp'), hid)
redis.call('ZADD', k('committing'), now, hid)
redis.call('PEXPIRE', hk, 600000)
return {'OK'}
