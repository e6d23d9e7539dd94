local hid = ARGV[3]
local hk = hold_key(hid)
local h = redis.call('HMGET', hk, 'status', 'owner', 'seats', 'ga_tier', 'ga_qty', 'places')
if h[1] == 'committed' then return {'OK'} end
if h[1] ~= 'committing' then return {'STATUS', tostring(h[1])} end
local seats, touched = {}, {}
if h[3] ~= '' then
  for seat in string.gmatch(h[3], '[^,]+') do
    local tier = redis.call('HGET', k('seat'), seat)
    if redis.call('HGET', k('held'), seat) == hid then
      redis.call('HDEL', k('held'), seat)
      if tier then redis.call('HINCRBY', k('count'), tier .. ':held', -1) end
    end
    if redis.call('SADD', k('sold'), seat) == 1 and tier then
      redis.call('HINCRBY', k('count'), tier .. ':sold', 1)
    end
    if tier then redis.call('ZREM', k('free:' .. tier), seat) end
    if tier then touched[tier] = true end
    seats[#seats + 1] = seat
  end
end
if h[4] ~= '' then
  redis.call('HINCRBY', k('count'), h[4] .. ':held', -tonumber(h[5]))
  redis.call('HINCRBY', k('count'), h[4] .. ':sold', tonumber(h[5]))
  touched[h[4]] = true
end
redis.call('HINCRBY', k('cust'), h[2], -tonumber(h[6]))
redis.call('HINCRBY', k('cust'), h[2] .. ':sold', tonumber(h[6]))
redis.call('ZREM', k('committing'), hid)
redis.call('HSET', hk, 'status', 'committed', 'order', ARGV[4])
publish('SOLD', seats, 'SOLD', touched)
return {'OK'}
