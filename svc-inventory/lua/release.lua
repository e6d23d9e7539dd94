sweep(now_ms())
local hid = ARGV[3]
local h = redis.call('HMGET', hold_key(hid), 'status', 'owner')
if not h[1] then return {'NOT_FOUND'} end
if ARGV[4] ~= '' and h[2] ~= ARGV[4] then return {'NOT_FOUND'} end
if h[1] ~= 'active' then return {'STATUS', h[1]} end
local freed, touched = free_hold(hid, 'released')
publish('RELEASED', freed, 'FREE', touched)
return {'OK'}
