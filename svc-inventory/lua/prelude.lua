local EP, GP = ARGV[1], ARGV[2]
local function k(s) return EP .. ':' .. s end
-- Integers as text without Lua's float formatting (tostring of a number is sprintf %.14g, a
-- tenth of a hold's time in Redis when every number went through it).
local function int(n) return string.format('%d', n) end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function tier_counts(t)
  local c = redis.call('HMGET', k('count'), t .. ':total', t .. ':held', t .. ':sold')
  local total, held, sold = tonumber(c[1] or '0'), tonumber(c[2] or '0'), tonumber(c[3] or '0')
  return {tier = t, total = total, held = held, sold = sold, free = total - held - sold}
end
local function make_free(seat, tier)
  redis.call('ZADD', k('free:' .. tier), redis.call('HGET', k('pos'), seat) or '0', seat)
end
-- The delta as JSON, written by hand: counts go out as the integer text Redis stores, and only
-- ids, which may hold any character, go through cjson.
local function publish(cause, seats, status, touched)
  local seq = redis.call('HINCRBY', k('meta'), 'seq', 1)
  -- No replica has a watcher of this event: the sequence still moves (a watcher arriving later
  -- subscribes before its snapshot, which carries it), but no delta is built or sent. The
  -- script is atomic, so nobody subscribes between this look and the PUBLISH.
  if redis.call('PUBSUB', 'NUMSUB', k('updates'))[2] == 0 then return seq end
  local items = {}
  for i, s in ipairs(seats) do
    items[i] = '{"id":' .. cjson.encode(s) .. ',"status":"' .. status .. '"}'
  end
  local tiers = {}
  for t, _ in pairs(touched) do
    local c = redis.call('HMGET', k('count'), t .. ':total', t .. ':held', t .. ':sold')
    tiers[#tiers + 1] = '{"tier":' .. cjson.encode(t) .. ',"total":' .. (c[1] or '0') ..
      ',"held":' .. (c[2] or '0') .. ',"sold":' .. (c[3] or '0') .. '}'
  end
  redis.call('PUBLISH', k('updates'), '{"seq":' .. int(seq) .. ',"cause":"' .. cause ..
    '","seats":[' .. table.concat(items, ',') .. '],"tiers":[' .. table.concat(tiers, ',') .. ']}')
  return seq
end
local function hold_key(hid) return GP .. ':hold:' .. hid end
local function free_hold(hid, new_status)
  local hk = hold_key(hid)
  local h = redis.call('HMGET', hk, 'status', 'owner', 'seats', 'ga_tier', 'ga_qty', 'places')
  if h[1] ~= 'active' and h[1] ~= 'committing' then return {}, {} end
  local freed, touched = {}, {}
  if h[3] and h[3] ~= '' then
    for seat in string.gmatch(h[3], '[^,]+') do
      if redis.call('HGET', k('held'), seat) == hid then
        redis.call('HDEL', k('held'), seat)
        local tier = redis.call('HGET', k('seat'), seat)
        if tier then
          redis.call('HINCRBY', k('count'), tier .. ':held', -1)
          make_free(seat, tier)
          touched[tier] = true
        end
        freed[#freed + 1] = seat
      end
    end
  end
  if h[4] and h[4] ~= '' then
    redis.call('HINCRBY', k('count'), h[4] .. ':held', -tonumber(h[5]))
    touched[h[4]] = true
  end
  redis.call('HINCRBY', k('cust'), h[2], -tonumber(h[6]))
  redis.call('ZREM', k('exp'), hid)
  redis.call('ZREM', k('committing'), hid)
  redis.call('HSET', hk, 'status', new_status)
  return freed, touched
end
local function sweep(now)
  local due = redis.call('ZRANGEBYSCORE', k('exp'), '-inf', int(now), 'LIMIT', '0', '500')
  if #due == 0 then return 0 end
  local freed, touched = {}, {}
  for _, hid in ipairs(due) do
    local f, t = free_hold(hid, 'expired')
    for _, s in ipairs(f) do freed[#freed + 1] = s end
    for tier, _ in pairs(t) do touched[tier] = true end
    redis.call('ZREM', k('exp'), hid)
  end
  publish('EXPIRED', freed, 'FREE', touched)
  return #due
end
