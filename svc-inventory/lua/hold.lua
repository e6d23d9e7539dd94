local hid, owner, places_s = ARGV[3], ARGV[4], ARGV[7]
local ttl, places = tonumber(ARGV[5]), tonumber(ARGV[7])
local meta = redis.call('HMGET', k('meta'), 'loaded', 'closed', 'limit', 'active')
if meta[1] ~= '1' then return {'NOT_LOADED'} end
if meta[2] == '1' then return {'CLOSED'} end
local limit = tonumber(meta[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- The same instant as text, cut from TIME's own digits.
local now_s = t[1] .. string.sub(string.rep('0', 6 - #t[2]) .. t[2], 1, 3)
local by_seat = ARGV[8] == 'seats'
local seats, tier_of, tier, kind, qty = {}, {}, nil, nil, 0
-- Unknown seats or tier refuse before anything is looked at.
if by_seat then
  local unknown = {}
  for i = 9, #ARGV do
    local s = ARGV[i]
    local st = redis.call('HGET', k('seat'), s)
    if not st then unknown[#unknown + 1] = s end
    tier_of[s] = st
    seats[#seats + 1] = s
  end
  if #unknown > 0 then table.insert(unknown, 1, 'UNKNOWN_SEAT'); return unknown end
else
  tier, qty = ARGV[9], tonumber(ARGV[10])
  kind = redis.call('HGET', k('kind'), tier)
  if not kind then return {'UNKNOWN_TIER'} end
end
local function over_limit()
  local mine = redis.call('HMGET', k('cust'), owner, owner .. ':sold')
  local have = tonumber(mine[1] or '0') + tonumber(mine[2] or '0')
  if have + places > limit then return {'LIMIT', tostring(have), tostring(limit)} end
end
-- Takes the places off the free sets, or takes nothing and says why. A named seat is free when
-- removing it from its tier's free set removes something, so the check and the taking are one
-- call; on a conflict the seats taken so far go back.
local function take()
  if by_seat then
    local taken, got = {}, {}
    for _, s in ipairs(seats) do
      if redis.call('ZREM', k('free:' .. tier_of[s]), s) == 1 then got[#got + 1] = s else taken[#taken + 1] = s end
    end
    if #taken > 0 then
      for _, s in ipairs(got) do make_free(s, tier_of[s]) end
      table.insert(taken, 1, 'TAKEN')
      return taken
    end
  elseif kind == 'ga' then
    local c = tier_counts(tier)
    if qty > c.free then return {'TAKEN', tostring(c.free)} end
  else
    seats = redis.call('ZRANGE', k('free:' .. tier), 0, qty - 1)
    if #seats < qty then return {'TAKEN', tostring(#seats)} end
    for _, s in ipairs(seats) do
      redis.call('ZREM', k('free:' .. tier), s)
      tier_of[s] = tier
    end
  end
end
-- Best available must see the seats of holds just expired, so quantity holds sweep first.
-- Named seats sweep only when something stands in the way (a taken seat, the customer's
-- limit): an expired hold then never blocks anyone, and a hold that meets no conflict skips
-- the sweep. The background sweeper frees the rest on time for watchers.
local swept = not by_seat
if swept then sweep(now) end
local refusal = over_limit() or take()
if refusal and not swept and sweep(now) > 0 then refusal = over_limit() or take() end
if refusal then return refusal end
local touched, seat_tiers, ga_tier, ga_qty = {}, {}, '', '0'
for _, s in ipairs(seats) do
  redis.call('HSET', k('held'), s, hid)
  local st = tier_of[s]
  touched[st] = (touched[st] or 0) + 1
  seat_tiers[#seat_tiers + 1] = st
end
for st, n in pairs(touched) do
  redis.call('HINCRBY', k('count'), st .. ':held', n == 1 and '1' or int(n))
end
if kind == 'ga' then
  ga_tier, ga_qty = tier, ARGV[10]
  redis.call('HINCRBY', k('count'), tier .. ':held', ga_qty)
  touched[tier] = true
end
local expires_s = int(now + ttl)
redis.call('ZADD', k('exp'), expires_s, hid)
redis.call('HINCRBY', k('cust'), owner, places_s)
local hk = hold_key(hid)
redis.call('HSET', hk, 'status', 'active', 'owner', owner, 'seats', table.concat(seats, ','),
  'ga_tier', ga_tier, 'ga_qty', ga_qty, 'places', places_s, 'created', now_s, 'expires', expires_s, 'order', '',
  'ep', EP)
redis.call('PEXPIRE', hk, ARGV[6])
if meta[4] ~= '1' then
  redis.call('SADD', GP .. ':active', EP)
  redis.call('HSET', k('meta'), 'active', '1')
end
publish('HELD', seats, 'HELD', touched)
return {'OK', now_s, expires_s, table.concat(seats, ','), table.concat(seat_tiers, ',')}
