-- Permission probe (gopherq check, worker start): runs every command the delivery scripts use, on one scratch
-- key of the queue's hash tag, and leaves it deleted. An ACL user that lacks a command, or access to the
-- queue's keys, fails here with Redis's NOPERM message instead of in the middle of a task's delivery.
-- KEYS[1] probe key
local k = KEYS[1]
redis.call('DEL', k)
redis.call('LPUSH', k, 'a')
redis.call('RPUSH', k, 'b')
redis.call('LPOP', k)
redis.call('RPOP', k)
redis.call('ZADD', k, 1, 'a')
redis.call('ZSCORE', k, 'a')
redis.call('ZCARD', k)
redis.call('ZRANGEBYSCORE', k, '-inf', '+inf', 'LIMIT', 0, 1)
redis.call('ZREM', k, 'a')
redis.call('ZADD', k, 1, 'a')
redis.call('ZPOPMIN', k)
redis.call('HSET', k, 'f', 1)
redis.call('HSETNX', k, 'g', 1)
redis.call('HEXISTS', k, 'f')
redis.call('HGET', k, 'f')
redis.call('HINCRBY', k, 'f', 1)
redis.call('HDEL', k, 'f', 'g')
redis.call('INCRBY', k, 1)
redis.call('SET', k, 'x')
redis.call('DEL', k)
return 1
