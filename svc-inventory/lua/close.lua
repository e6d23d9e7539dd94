redis.call('HSET', k('meta'), 'closed', '1')
publish('RESYNC', {}, 'FREE', {})
return {'OK'}
