//! The atomic Redis side of holds, as Lua scripts.
//!
//! Keys of one event share the prefix `<prefix>:{<event>}` (one hash slot):
//! `meta` (loaded, version, limit, closed, seq), `seat` (seat -> tier), `pos` (seat -> drawing
//! position), `kind` (tier -> seat|ga), `free:<t>` (the tier's seats neither held nor sold, scored
//! by position, so best-available is the lowest scores), `tiers`, `count` (`<tier>:total|held|sold`),
//! `held` (seat -> hold id), `sold` (set of seats), `exp` (hold id -> expiry ms), `committing`,
//! `cust` (`<owner>` -> places held, `<owner>:sold` -> places bought) and the pub/sub channel
//! `updates`. Holds are keyed globally, `<prefix>:hold:<id>`, with their event's prefix in the
//! field `ep`, so a hold id alone finds its event without a second key to keep. `<prefix>:active`
//! lists events with unexpired holds for the sweeper; the event's `meta.active` mirrors its
//! membership, so a hold adds the event only when it is not there yet. Scripts use a single Redis
//! (they build keys from their arguments), as deployed here.
//!
//! Every script that reads holds first sweeps the event's due holds (a hold only when something
//! stands in its way), so an expired hold never blocks a seat, even before the background
//! sweeper gets to it. Every change is published on
//! `updates` with a per-event sequence number.

const PRELUDE: &str = r#"
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
"#;

/// ARGV: prefixes, hold id, owner, ttl ms, how long the record is kept (ms), places, mode, then
/// `seats`: seat ids | `quantity`: tier, quantity.
/// Returns {OK, now, expires, seats, their tiers} | {NOT_LOADED} | {CLOSED} | {UNKNOWN_SEAT, ids..} |
/// {UNKNOWN_TIER} | {TAKEN, ids.. or free count} | {LIMIT, already, limit}. The per-customer
/// limit is the event's, loaded with it.
const HOLD: &str = r#"
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
"#;

/// ARGV: prefixes, hold id, owner ('' = anyone). Returns {OK} | {NOT_FOUND} | {STATUS, status}.
const RELEASE: &str = r#"
sweep(now_ms())
local hid = ARGV[3]
local h = redis.call('HMGET', hold_key(hid), 'status', 'owner')
if not h[1] then return {'NOT_FOUND'} end
if ARGV[4] ~= '' and h[2] ~= ARGV[4] then return {'NOT_FOUND'} end
if h[1] ~= 'active' then return {'STATUS', h[1]} end
local freed, touched = free_hold(hid, 'released')
publish('RELEASED', freed, 'FREE', touched)
return {'OK'}
"#;

/// Marks an active, unexpired hold as being committed (the sweeper leaves it alone).
/// ARGV: prefixes, hold id. Returns {OK} | {NOT_FOUND} | {STATUS, status}.
const BEGIN_COMMIT: &str = r#"
local now = now_ms()
sweep(now)
local hid = ARGV[3]
local hk = hold_key(hid)
local status = redis.call('HGET', hk, 'status')
if not status then return {'NOT_FOUND'} end
if status ~= 'active' then return {'STATUS', status} end
redis.call('HSET', hk, 'status', 'committing')
redis.call('ZREM', k('exp'), hid)
redis.call('ZADD', k('committing'), now, hid)
redis.call('PEXPIRE', hk, 600000)
return {'OK'}
"#;

/// Puts a hold whose durable commit failed back to active (expiring as before).
const ABORT_COMMIT: &str = r#"
local hid = ARGV[3]
local hk = hold_key(hid)
if redis.call('HGET', hk, 'status') ~= 'committing' then return {'STATUS'} end
redis.call('HSET', hk, 'status', 'active')
redis.call('ZREM', k('committing'), hid)
redis.call('ZADD', k('exp'), redis.call('HGET', hk, 'expires'), hid)
return {'OK'}
"#;

/// Records in Redis a sale PostgreSQL has already committed. Idempotent.
/// ARGV: prefixes, hold id, order id.
const FINISH_COMMIT: &str = r#"
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
"#;

/// Returns sold places to sale (after PostgreSQL released them).
/// ARGV: prefixes, owner, n seats, seats.., n tiers, (tier, qty)..
const RETURN_SOLD: &str = r#"
local owner = ARGV[3]
local i = 4
local n = tonumber(ARGV[i]); i = i + 1
local seats, touched, places = {}, {}, 0
for _ = 1, n do
  local seat = ARGV[i]; i = i + 1
  if redis.call('SREM', k('sold'), seat) == 1 then
    local tier = redis.call('HGET', k('seat'), seat)
    if tier then
      redis.call('HINCRBY', k('count'), tier .. ':sold', -1)
      if redis.call('HEXISTS', k('held'), seat) == 0 then make_free(seat, tier) end
      touched[tier] = true
    end
  end
  seats[#seats + 1] = seat
  places = places + 1
end
local m = tonumber(ARGV[i]); i = i + 1
for _ = 1, m do
  local tier, qty = ARGV[i], tonumber(ARGV[i + 1]); i = i + 2
  redis.call('HINCRBY', k('count'), tier .. ':sold', -qty)
  touched[tier] = true
  places = places + qty
end
redis.call('HINCRBY', k('cust'), owner .. ':sold', -places)
publish('RETURNED', seats, 'FREE', touched)
return {'OK'}
"#;

/// The background sweep of one event. Returns {expired, remaining}; forgets the event when no
/// hold is left to expire.
const SWEEP: &str = r#"
local n = sweep(now_ms())
local left = redis.call('ZCARD', k('exp')) + redis.call('ZCARD', k('committing'))
if left == 0 then
  redis.call('SREM', GP .. ':active', EP)
  redis.call('HSET', k('meta'), 'active', '0')
end
return {n, left}
"#;

/// A consistent picture for GetAvailability and watchers, after sweeping due holds.
/// Returns {loaded, seq, closed, counts (flat), held seats, sold seats, all seats | {}}.
const SNAPSHOT: &str = r#"
local meta = redis.call('HMGET', k('meta'), 'loaded', 'seq', 'closed')
if meta[1] ~= '1' then return {'0'} end
sweep(now_ms())
local seq = redis.call('HGET', k('meta'), 'seq') or '0'
local all = {}
if ARGV[3] == '1' then all = redis.call('HKEYS', k('seat')) end
return {'1', seq, meta[3] or '0', redis.call('HGETALL', k('count')), redis.call('HKEYS', k('held')),
  redis.call('SMEMBERS', k('sold')), all}
"#;

/// Writes part of an event's seat map under a load's own keys, where no hold sees it: a large map
/// goes in many short scripts instead of one that would stall Redis (and outlast the client's
/// response timeout). The keys expire if the load is abandoned.
/// ARGV: prefixes, load id, then (seat, tier, position, '1' when free)..
const STAGE: &str = r#"
local function sk(s) return EP .. ':stage:' .. ARGV[3] .. ':' .. s end
local keep = 600000
local seat_args, pos_args, free = {}, {}, {}
for i = 4, #ARGV, 4 do
  local s, t, p = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  seat_args[#seat_args + 1] = s; seat_args[#seat_args + 1] = t
  pos_args[#pos_args + 1] = s; pos_args[#pos_args + 1] = p
  if ARGV[i + 3] == '1' then
    local z = free[t]
    if not z then z = {}; free[t] = z end
    z[#z + 1] = p; z[#z + 1] = s
  end
end
if #seat_args > 0 then
  redis.call('HSET', sk('seat'), unpack(seat_args))
  redis.call('HSET', sk('pos'), unpack(pos_args))
  redis.call('PEXPIRE', sk('seat'), keep)
  redis.call('PEXPIRE', sk('pos'), keep)
end
for t, z in pairs(free) do
  redis.call('ZADD', sk('free:' .. t), unpack(z))
  redis.call('PEXPIRE', sk('free:' .. t), keep)
end
return {'OK'}
"#;

/// (Re)loads an event's static state from PostgreSQL's truth, keeping live holds: swaps in the
/// seat map a load staged, then writes counts, sold seats and bought places in bulk.
/// ARGV: prefixes, load id, force, version, limit, closed, seats staged, n seat tiers,
/// (tier, total, sold).., n quotas, (tier, capacity, sold).., n sold seats, seats.., n owners,
/// (`<owner>:sold`, places)..
/// Returns {OK} | {ALREADY} (loaded and not forced) | {NEWER} (a newer version is loaded) |
/// {RESTAGE} (the staged map is incomplete, e.g. Redis was flushed meanwhile).
const LOAD: &str = r#"
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
"#;

/// Stops sales: no new holds. ARGV: prefixes.
const CLOSE: &str = r#"
redis.call('HSET', k('meta'), 'closed', '1')
publish('RESYNC', {}, 'FREE', {})
return {'OK'}
"#;

/// Every script, compiled once (redis-rs sends EVALSHA and falls back to EVAL after a flush).
pub struct Scripts {
    pub hold: redis::Script,
    pub release: redis::Script,
    pub begin_commit: redis::Script,
    pub abort_commit: redis::Script,
    pub finish_commit: redis::Script,
    pub return_sold: redis::Script,
    pub sweep: redis::Script,
    pub snapshot: redis::Script,
    pub stage: redis::Script,
    pub load: redis::Script,
    pub close: redis::Script,
}

impl Scripts {
    pub fn new() -> Self {
        let with_prelude = |body: &str| redis::Script::new(&format!("{PRELUDE}\n{body}"));
        Self {
            hold: with_prelude(HOLD),
            release: with_prelude(RELEASE),
            begin_commit: with_prelude(BEGIN_COMMIT),
            abort_commit: with_prelude(ABORT_COMMIT),
            finish_commit: with_prelude(FINISH_COMMIT),
            return_sold: with_prelude(RETURN_SOLD),
            sweep: with_prelude(SWEEP),
            snapshot: with_prelude(SNAPSHOT),
            stage: with_prelude(STAGE),
            load: with_prelude(LOAD),
            close: with_prelude(CLOSE),
        }
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Self::new()
    }
}
