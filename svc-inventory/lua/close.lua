redis.call('HSET', k('meta'), 'closed', '1')
-- Waiting lines end: what they were owed goes back (to nobody: sales are closed).
for _, t in ipairs(redis.call('HKEYS', k('kind'))) do
  local line = redis.call('ZRANGE', k('wq:' .. t), 0, -1)
  for i = 1, #line, 1000 do
    redis.call('HDEL', k('wqe'), unpack(line, i, math.min(i + 999, #line)))
  end
  if #line > 0 then
    redis.call('DEL', k('wq:' .. t))
    wl.serve[t] = true
  end
end
publish('RESYNC', {}, 'FREE', {})
return {'OK'}
