-- Shared by flow_done.lua (pulled in by `--@include flow_stats`): per flow key and five minutes, how attempts ended
-- (the label: 'ok', or the executor's name for a failure, e.g. '429', '5xx') and how long they took (a latency bucket
-- index), for the destinations page (core/flow_stats.py reads them). One small hash per flow key and five minutes,
-- kept `ttl` seconds.
local stats_touched = {}

local function record_stats(key, label, bucket, ttl)
  if label == '' then return end
  redis.call('HINCRBY', key, 'n:' .. label, 1)
  if bucket ~= '' then redis.call('HINCRBY', key, 'l:' .. bucket, 1) end
  if not stats_touched[key] then
    stats_touched[key] = true
    redis.call('EXPIRE', key, ttl)
  end
end
