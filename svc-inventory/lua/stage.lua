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
