-- Claim up to ARGV[1] tasks for one worker, atomically: each gets an attempt token, an in-flight record and a
-- lease. Tasks a blocking fetch already moved into the worker's processing list are claimed first.
-- KEYS: 1 ready list, 2 this worker's processing list, 3 leases (zset), 4 inflight (hash), 5 token counter,
--       6 paused flag
-- ARGV: 1 max tasks, 2 lease deadline (ms)
-- Returns: {token1, envelope1, token2, envelope2, ...}, or false when the queue is paused (anything staged goes
-- back to the head of the ready list).
if redis.call('EXISTS', KEYS[6]) == 1 then
  while redis.call('LMOVE', KEYS[2], KEYS[1], 'RIGHT', 'LEFT') do end
  return false
end
local want = tonumber(ARGV[1])
local items = {}
local staged = redis.call('LPOP', KEYS[2], want)
if staged then
  for i = 1, #staged do items[#items + 1] = staged[i] end
end
if #items < want then
  local ready = redis.call('LPOP', KEYS[1], want - #items)
  if ready then
    for i = 1, #ready do items[#items + 1] = ready[i] end
  end
end
local n = #items
if n == 0 then return {} end
local last = redis.call('INCRBY', KEYS[5], n)
local out, hargs, zargs = {}, {}, {}
for i = 1, n do
  local token = tostring(last - n + i)
  out[#out + 1] = token
  out[#out + 1] = items[i]
  hargs[#hargs + 1] = token
  hargs[#hargs + 1] = items[i]
  zargs[#zargs + 1] = ARGV[2]
  zargs[#zargs + 1] = token
end
redis.call('HSET', KEYS[4], unpack(hargs))
redis.call('ZADD', KEYS[3], unpack(zargs))
return out
