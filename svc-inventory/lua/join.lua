local entry, tier, qty_s, owner, position = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local qty = tonumber(qty_s)
local meta = redis.call('HMGET', k('meta'), 'loaded', 'closed', 'limit')
if meta[1] ~= '1' then return {'NOT_LOADED'} end
if meta[2] == '1' then return {'CLOSED'} end
if not redis.call('HGET', k('kind'), tier) then return {'UNKNOWN_TIER'} end
if redis.call('HEXISTS', k('wqe'), entry) == 1 or redis.call('HEXISTS', k('offered'), entry) == 1
  or redis.call('EXISTS', hold_key(entry)) == 1 then
  return {'ALREADY'}
end
-- The offer settings in force, for the offers this event's lines make from now on.
redis.call('HSET', k('meta'), 'wl_ttl', ARGV[9], 'wl_keep', ARGV[10])
sweep(now_ms())
-- A repair puts back in line an entry PostgreSQL has waiting: its checks were made at joining.
if ARGV[8] ~= 'repair' then
  -- Only a sold-out tier has a line: a free place is to be held, not waited for.
  local c = tier_counts(tier)
  if c.free > 0 then return {'AVAILABLE', tostring(c.free)} end
  local mine = redis.call('HMGET', k('cust'), owner, owner .. ':sold')
  local have = tonumber(mine[1] or '0') + tonumber(mine[2] or '0')
  if have + qty > tonumber(meta[3]) then return {'LIMIT', tostring(have), meta[3]} end
end
redis.call('ZADD', k('wq:' .. tier), position, entry)
redis.call('HSET', k('wqe'), entry, tier .. ',' .. qty_s .. ',' .. owner)
set_aside(tier)
publish('HELD', {}, 'HELD', {[tier] = true})
return {'OK'}
