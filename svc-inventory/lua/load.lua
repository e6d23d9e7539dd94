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
redis.call('HSET', k('meta'), 'loaded', '1', 'version', ARGV[5], 'limit', ARGV[6], 'closed', ARGV[7])
publish('RESYNC', {}, 'FREE', {})
return {'OK'}
