local owner = ARGV[3]
local i = 4
local n = tonumber(ARGV[i]); i = i + 1
local seats, touched, places = {}, {}, 0
for _ = 1, n do
  local seat = ARGV[i]; i = i + 1
  local owed = false
  if redis.call('SREM', k('sold'), seat) == 1 then
    local tier = redis.call('HGET', k('seat'), seat)
    if tier then
      redis.call('HINCRBY', k('count'), tier .. ':sold', -1)
      if redis.call('HEXISTS', k('held'), seat) == 0 then owed = give_back(tier, seat, 1) end
      touched[tier] = true
    end
  end
  if not owed then seats[#seats + 1] = seat end
  places = places + 1
end
local m = tonumber(ARGV[i]); i = i + 1
for _ = 1, m do
  local tier, qty = ARGV[i], tonumber(ARGV[i + 1]); i = i + 2
  redis.call('HINCRBY', k('count'), tier .. ':sold', -qty)
  give_back(tier, nil, qty)
  touched[tier] = true
  places = places + qty
end
redis.call('HINCRBY', k('cust'), owner .. ':sold', -places)
publish('RETURNED', seats, 'FREE', touched)
return {'OK'}
