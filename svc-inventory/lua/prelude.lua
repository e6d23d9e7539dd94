local EP, GP = ARGV[1], ARGV[2]
local function k(s) return EP .. ':' .. s end
-- Integers as text without Lua's float formatting (tostring of a number is sprintf %.14g, a
-- tenth of a hold's time in Redis when every number went through it).
local function int(n) return string.format('%d', n) end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Places owed to a tier's waiting list are neither free nor anyone's yet.
local function tier_counts(t)
  local c = redis.call('HMGET', k('count'), t .. ':total', t .. ':held', t .. ':sold', t .. ':owed')
  local total, held, sold = tonumber(c[1] or '0'), tonumber(c[2] or '0'), tonumber(c[3] or '0')
  local owed = tonumber(c[4] or '0')
  return {tier = t, total = total, held = held, sold = sold, owed = owed, free = total - held - sold - owed}
end
local function make_free(seat, tier)
  redis.call('ZADD', k('free:' .. tier), redis.call('HGET', k('pos'), seat) or '0', seat)
end
local function hold_key(hid) return GP .. ':hold:' .. hid end

-- The waiting list. A tier with a line (`wq:<t>`, entry -> position; `wqe`, entry ->
-- "tier,qty,owner") keeps what comes back for it: returned places go to `owed`
-- (a count, and for seats the zset `owed:<t>`) instead of the free set, so nobody outside the
-- line can take them, and are handed to the head of the line, whole quantities in order, as
-- an ordinary hold of the head's whose id is the entry's. `offered` (entry -> expiry ms, or
-- LIMIT) tells the service which offers to record. A place is never free while a tier has a
-- line: joining sets every free place aside.
local wl = {serve = {}, held = {}, freed = {}, touched = {}}
-- Gives a place back to sale: to the tier's line when it has one (true), else free.
local function give_back(tier, seat, n)
  if redis.call('EXISTS', k('wq:' .. tier)) == 0 then
    if seat then make_free(seat, tier) end
    return false
  end
  if seat then
    redis.call('ZADD', k('owed:' .. tier), redis.call('HGET', k('pos'), seat) or '0', seat)
    wl.held[#wl.held + 1] = seat
  end
  redis.call('HINCRBY', k('count'), tier .. ':owed', n)
  wl.serve[tier] = true
  return true
end
-- Moves every free place of the tier to its line.
local function set_aside(t)
  if redis.call('HGET', k('kind'), t) == 'ga' then
    local c = tier_counts(t)
    if c.free > 0 then redis.call('HINCRBY', k('count'), t .. ':owed', c.free) end
  else
    local z = redis.call('ZRANGE', k('free:' .. t), 0, -1, 'WITHSCORES')
    local j = 1
    while j <= #z do
      local args = {}
      local last = math.min(j + 1999, #z)
      for m = j, last, 2 do
        args[#args + 1] = z[m + 1]; args[#args + 1] = z[m]
        wl.held[#wl.held + 1] = z[m]
      end
      redis.call('ZADD', k('owed:' .. t), unpack(args))
      j = last + 1
    end
    if #z > 0 then
      redis.call('DEL', k('free:' .. t))
      redis.call('HINCRBY', k('count'), t .. ':owed', #z / 2)
    end
  end
  wl.serve[t] = true
end
-- Makes the offer of `entry` a hold of the owner's, with the entry's id: its seats (already
-- taken off every set) or a quantity of a general-admission tier, until `expires`.
local function offer_hold(entry, t, owner, qty_s, seats, expires, now, keep)
  local ga_tier, ga_qty = '', '0'
  if #seats == 0 then ga_tier, ga_qty = t, qty_s end
  for _, s in ipairs(seats) do redis.call('HSET', k('held'), s, entry) end
  redis.call('HINCRBY', k('count'), t .. ':held', qty_s)
  redis.call('HINCRBY', k('cust'), owner, qty_s)
  local expires_s = int(expires)
  redis.call('ZADD', k('exp'), expires_s, entry)
  local hk = hold_key(entry)
  redis.call('HSET', hk, 'status', 'active', 'owner', owner, 'seats', table.concat(seats, ','),
    'ga_tier', ga_tier, 'ga_qty', ga_qty, 'places', qty_s, 'created', int(now), 'expires', expires_s,
    'order', '', 'ep', EP, 'offer', '1')
  redis.call('PEXPIRE', hk, expires - now + keep)
  redis.call('SADD', GP .. ':active', EP)
  redis.call('HSET', k('meta'), 'active', '1')
  return expires_s
end
-- Offers the head of the tier's line what it is owed while that covers the head's whole
-- quantity; a line left empty frees what it was owed.
local function serve(t)
  local line = k('wq:' .. t)
  local meta = redis.call('HMGET', k('meta'), 'limit', 'wl_ttl', 'wl_keep', 'closed')
  local now = now_ms()
  local ga = redis.call('HGET', k('kind'), t) == 'ga'
  wl.touched[t] = true
  while meta[4] ~= '1' do
    local head = redis.call('ZRANGE', line, 0, 0)[1]
    if not head then break end
    local spec = redis.call('HGET', k('wqe'), head) or ''
    local _, qty_s, owner = string.match(spec, '^([^,]*),([^,]*),([^,]*)')
    local qty = tonumber(qty_s or '0') or 0
    local owed = tonumber(redis.call('HGET', k('count'), t .. ':owed') or '0')
    if qty > owed then break end
    local seats = {}
    if not ga and qty > 0 then
      seats = redis.call('ZRANGE', k('owed:' .. t), 0, qty - 1)
      if #seats < qty then
        -- The count ran ahead of the seats kept: trust the seats, and wait for more.
        redis.call('HSET', k('count'), t .. ':owed', int(redis.call('ZCARD', k('owed:' .. t))))
        break
      end
    end
    redis.call('ZREM', line, head)
    redis.call('HDEL', k('wqe'), head)
    local mine = redis.call('HMGET', k('cust'), owner or '', (owner or '') .. ':sold')
    local have = tonumber(mine[1] or '0') + tonumber(mine[2] or '0')
    if qty < 1 or not owner then
      -- Unreadable: out of line (the service's round settles what PostgreSQL has of it).
    elseif have + qty > tonumber(meta[1] or '0') then
      redis.call('HSET', k('offered'), head, 'LIMIT')
    else
      if #seats > 0 then redis.call('ZREM', k('owed:' .. t), unpack(seats)) end
      redis.call('HINCRBY', k('count'), t .. ':owed', -qty)
      local expires = now + tonumber(meta[2] or '1800000')
      redis.call('HSET', k('offered'), head,
        offer_hold(head, t, owner, qty_s, seats, expires, now, tonumber(meta[3] or '600000')))
    end
  end
  if redis.call('EXISTS', line) == 0 then
    local owed = tonumber(redis.call('HGET', k('count'), t .. ':owed') or '0')
    if owed > 0 then
      for _, s in ipairs(redis.call('ZRANGE', k('owed:' .. t), 0, -1)) do
        make_free(s, t)
        wl.freed[#wl.freed + 1] = s
      end
      redis.call('DEL', k('owed:' .. t))
      redis.call('HSET', k('count'), t .. ':owed', '0')
    end
  end
end
-- The delta as JSON, written by hand: counts go out as the integer text Redis stores, and only
-- ids, which may hold any character, go through cjson.
-- Every script that changes places ends here, so owed places are handed to their lines
-- before anyone else can act.
local function publish(cause, seats, status, touched)
  for t, _ in pairs(wl.serve) do
    wl.serve[t] = nil
    serve(t)
  end
  -- What the lines did goes out with this delta, once.
  local kept, freed, served = wl.held, wl.freed, wl.touched
  wl.held, wl.freed, wl.touched = {}, {}, {}
  local seq = redis.call('HINCRBY', k('meta'), 'seq', 1)
  -- No replica has a watcher of this event: the sequence still moves (a watcher arriving later
  -- subscribes before its snapshot, which carries it), but no delta is built or sent. The
  -- script is atomic, so nobody subscribes between this look and the PUBLISH.
  if redis.call('PUBSUB', 'NUMSUB', k('updates'))[2] == 0 then return seq end
  local items = {}
  for i, s in ipairs(seats) do
    items[i] = '{"id":' .. cjson.encode(s) .. ',"status":"' .. status .. '"}'
  end
  for _, s in ipairs(kept) do items[#items + 1] = '{"id":' .. cjson.encode(s) .. ',"status":"HELD"}' end
  for _, s in ipairs(freed) do items[#items + 1] = '{"id":' .. cjson.encode(s) .. ',"status":"FREE"}' end
  for t, _ in pairs(served) do touched[t] = true end
  local tiers = {}
  for t, _ in pairs(touched) do
    -- Owed places show as held: taken, for everyone outside the line.
    local c = redis.call('HMGET', k('count'), t .. ':total', t .. ':held', t .. ':sold', t .. ':owed')
    local held = (c[4] and c[4] ~= '0') and int(tonumber(c[2] or '0') + tonumber(c[4])) or (c[2] or '0')
    tiers[#tiers + 1] = '{"tier":' .. cjson.encode(t) .. ',"total":' .. (c[1] or '0') ..
      ',"held":' .. held .. ',"sold":' .. (c[3] or '0') .. '}'
  end
  redis.call('PUBLISH', k('updates'), '{"seq":' .. int(seq) .. ',"cause":"' .. cause ..
    '","seats":[' .. table.concat(items, ',') .. '],"tiers":[' .. table.concat(tiers, ',') .. ']}')
  return seq
end
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
        local owed = false
        if tier then
          redis.call('HINCRBY', k('count'), tier .. ':held', -1)
          owed = give_back(tier, seat, 1)
          touched[tier] = true
        end
        if not owed then freed[#freed + 1] = seat end
      end
    end
  end
  if h[4] and h[4] ~= '' then
    redis.call('HINCRBY', k('count'), h[4] .. ':held', -tonumber(h[5]))
    give_back(h[4], nil, tonumber(h[5]))
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
