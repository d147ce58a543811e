-- Fair keys, run-time control and repair (see fair_base.lua): look again at parked keys, because their settings
-- changed (`gopherq keys set`, resume) or, from the workers' upkeep, because a key parked until one of its tasks
-- ends could wait for an end that was never reported (a settle lost with its worker): the claim then checks the key
-- again and heals its count of running tasks from the in-flight record. Keys with nothing waiting leave the
-- parked set.
-- KEYS: 1 the queue's plain ready list
-- ARGV: 1 'keys' (then 2.. the keys to look at again), 'heal' (then 2: most parked keys to look at) or 'rules'
--       (then 2: most parked keys to look at, 3.. the settings' rules, replacing the stored ones: core/fair.py)
-- Returns: how many keys were looked at again.
local ready = KEYS[1]
--@include fair_base
local keys = {}
if ARGV[1] == 'rules' then
  redis.call('DEL', FAIR_RULES)
  for i = 3, #ARGV do redis.call('RPUSH', FAIR_RULES, ARGV[i]) end
end
if ARGV[1] == 'heal' or ARGV[1] == 'rules' then
  keys = redis.call('ZRANGEBYSCORE', FAIR_PARKED, '+inf', '+inf', 'LIMIT', 0, tonumber(ARGV[2]))
else
  for i = 2, #ARGV do keys[#keys + 1] = ARGV[i] end
end
local done = 0
for _, k in ipairs(keys) do
  if redis.call('ZSCORE', FAIR_PARKED, k) then
    fair_unpark(k)
    done = done + 1
  end
end
if done > 0 then fair_wake() end
return done
