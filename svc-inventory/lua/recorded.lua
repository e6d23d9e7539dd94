-- An offer the service has recorded: forgotten here unless it was made again meanwhile.
if redis.call('HGET', k('offered'), ARGV[3]) == ARGV[4] then redis.call('HDEL', k('offered'), ARGV[3]) end
return {'OK'}
