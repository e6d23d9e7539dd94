-- The event's waiting-list state for the service: offers to record, and who is in line.
local meta = redis.call('HGET', k('meta'), 'loaded')
if meta ~= '1' then return {'0'} end
sweep(now_ms())
return {'1', redis.call('HGETALL', k('offered')), redis.call('HKEYS', k('wqe'))}
