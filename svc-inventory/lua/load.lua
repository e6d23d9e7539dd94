local function sk(s) return EP .. ':stage:' .. ARGV[3] .. ':' .. s end
-- list[from .. from + count - 1] as arguments of `cmd key`, at most 1000 at a time (Lua's
-- unpack has a limit).
local function bulk(cmd, key, list, from, count)
  local last = from + count - 1
  local i = from
  while i <= last do
    local j = math.min(i + 999, last)
    redis.call(cmd, key, unpack(list, i, j))
    i = j + 1
  end
end
local seat_tiers = {}
for j = 1, tonumber(ARGV[9]) do seat_tiers[j] = ARGV[10 + (j - 1) * 3] end
local function drop_stage()
  redis.call('DEL', sk('seat'), sk('pos'))
  for _, t in ipairs(seat_tiers) do redis.call('DEL', sk('free:' .. t)) end
end
local meta = redis.call('HMGET', k('meta'), 'loaded', 'version')
if ARGV[4] ~= '1' and meta[1] == '1' then drop_stage(); return {'ALREADY'} end
if meta[1] == '1' and tonumber(meta[2] or '0') > tonumber(ARGV[5]) then drop_stage(); return {'NEWER'} end
if redis.call('HLEN', sk('seat')) ~= tonumber(ARGV[8]) then drop_stage(); return {'RESTAGE'} end
local ga_held = {}
local old = redis.call('HGETALL', k('count'))
for j = 1, #old, 2 do
  if string.sub(old[j], -5) == ':held' then ga_held[string.sub(old[j], 1, -6)] = tonumber(old[j + 1]) end
end
for _, t in ipairs(redis.call('SMEMBERS', k('tiers'))) do redis.call('DEL', k('free:' .. t)) end
-- Waiting lines stay (an entry may have joined while this load read PostgreSQL) and get what
-- PostgreSQL has besides, below; what they were owed is counted again from the new map.
local old_tiers = redis.call('HKEYS', k('kind'))
for _, t in ipairs(old_tiers) do redis.call('DEL', k('owed:' .. t)) end
redis.call('DEL', k('seat'), k('pos'), k('kind'), k('tiers'), k('count'), k('sold'))
-- Bought places are reloaded below; places held stay with their live holds.
local stale = {}
for _, f in ipairs(redis.call('HKEYS', k('cust'))) do
  if string.sub(f, -5) == ':sold' then stale[#stale + 1] = f end
end
bulk('HDEL', k('cust'), stale, 1, #stale)
if tonumber(ARGV[8]) > 0 then
  redis.call('RENAME', sk('seat'), k('seat'))
  redis.call('RENAME', sk('pos'), k('pos'))
  redis.call('PERSIST', k('seat'))
  redis.call('PERSIST', k('pos'))
end
local i = 10
for _ = 1, #seat_tiers do
  local t, total, sold = ARGV[i], ARGV[i + 1], ARGV[i + 2]; i = i + 3
  redis.call('HSET', k('kind'), t, 'seat')
  redis.call('SADD', k('tiers'), t)
  redis.call('HSET', k('count'), t .. ':total', total, t .. ':sold', sold, t .. ':held', '0')
  -- A tier sold out has no free set staged.
  if redis.call('EXISTS', sk('free:' .. t)) == 1 then
    redis.call('RENAME', sk('free:' .. t), k('free:' .. t))
    redis.call('PERSIST', k('free:' .. t))
  end
end
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local tier, cap, sold = ARGV[i], ARGV[i + 1], ARGV[i + 2]; i = i + 3
  redis.call('HSET', k('kind'), tier, 'ga')
  redis.call('HSET', k('count'), tier .. ':total', cap, tier .. ':sold', sold, tier .. ':held', ga_held[tier] or 0)
end
n = tonumber(ARGV[i]); i = i + 1
bulk('SADD', k('sold'), ARGV, i, n); i = i + n
n = tonumber(ARGV[i]); i = i + 1
bulk('HSET', k('cust'), ARGV, i, 2 * n); i = i + 2 * n
-- Live seat holds keep their seats; those on seats the new map dropped are let go.
local held = redis.call('HGETALL', k('held'))
for j = 1, #held, 2 do
  local tier = redis.call('HGET', k('seat'), held[j])
  if tier then
    redis.call('HINCRBY', k('count'), tier .. ':held', 1)
    redis.call('ZREM', k('free:' .. tier), held[j])
  else
    redis.call('HDEL', k('held'), held[j])
  end
end
-- Waiting lines. A line of a tier the map dropped, or of a closed event, ends (the service's
-- round removes its entries). Entries PostgreSQL has waiting join their lines; offers it has
-- announced whose hold Redis lost come back as the same hold, places and deadline while those
-- places are free.
local closed = ARGV[7] == '1'
for _, t in ipairs(old_tiers) do
  if closed or redis.call('HEXISTS', k('kind'), t) == 0 then
    local line = redis.call('ZRANGE', k('wq:' .. t), 0, -1)
    for j = 1, #line, 1000 do redis.call('HDEL', k('wqe'), unpack(line, j, math.min(j + 999, #line))) end
    redis.call('DEL', k('wq:' .. t))
  end
end
local wl_ttl, wl_keep = ARGV[i], ARGV[i + 1]; i = i + 2
local function placeable(entry, tier)
  return not closed and redis.call('HEXISTS', k('kind'), tier) == 1 and redis.call('EXISTS', hold_key(entry)) == 0
    and redis.call('HEXISTS', k('offered'), entry) == 0
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local entry, tier, qty, owner, position = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  i = i + 5
  if placeable(entry, tier) and redis.call('HEXISTS', k('wqe'), entry) == 0 then
    redis.call('ZADD', k('wq:' .. tier), position, entry)
    redis.call('HSET', k('wqe'), entry, tier .. ',' .. qty .. ',' .. owner)
  end
end
local now = now_ms()
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local entry, tier, qty, owner, expires, seat_list = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  i = i + 6
  if placeable(entry, tier) and tonumber(expires) > now then
    local seats, free = {}, true
    if redis.call('HGET', k('kind'), tier) == 'ga' then
      free = tier_counts(tier).free >= tonumber(qty)
    else
      for s in string.gmatch(seat_list, '[^,]+') do
        seats[#seats + 1] = s
        if not redis.call('ZSCORE', k('free:' .. tier), s) then free = false end
      end
      free = free and #seats == tonumber(qty)
      if free then redis.call('ZREM', k('free:' .. tier), unpack(seats)) end
    end
    if free then offer_hold(entry, tier, owner, qty, seats, tonumber(expires), now, tonumber(wl_keep)) end
  end
end
redis.call('HSET', k('meta'), 'loaded', '1', 'version', ARGV[5], 'limit', ARGV[6], 'closed', ARGV[7],
  'wl_ttl', wl_ttl, 'wl_keep', wl_keep)
for _, t in ipairs(redis.call('HKEYS', k('kind'))) do
  if redis.call('EXISTS', k('wq:' .. t)) == 1 then set_aside(t) end
end
publish('RESYNC', {}, 'FREE', {})
return {'OK'}
