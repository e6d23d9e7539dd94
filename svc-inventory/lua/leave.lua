local entry = ARGV[3]
local spec = redis.call('HGET', k('wqe'), entry)
if not spec then return {'GONE'} end
local tier = string.match(spec, '^([^,]*),')
redis.call('ZREM', k('wq:' .. tier), entry)
redis.call('HDEL', k('wqe'), entry)
-- The next in line may now be served, or the line is gone and its places are free.
wl.serve[tier] = true
publish('RELEASED', {}, 'FREE', {[tier] = true})
return {'OK'}
