local n = sweep(now_ms())
local left = redis.call('ZCARD', k('exp')) + redis.call('ZCARD', k('committing'))
if left == 0 then
  redis.call('SREM', GP .. ':active', EP)
  redis.call('HSET', k('meta'), 'active', '0')
end
return {n, left}
