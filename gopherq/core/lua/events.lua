-- Shared by the scripts that write a queue's events (pulled in by `--@include events`; see core/eventlog.py):
-- the settle script, for the outcomes it records, and the record script, for the stream sink's other events.
-- record_events(stream, maxlen, keep, ttl, entries, spec) XADDs each line of `entries` (an event as JSON; orjson
-- escapes newlines, so a line is a whole event) to `stream`, capped at about `maxlen`. `spec` has one line per
-- event: the KEYS index of its task's timeline (0: none), then, when the timeline needs a shorter copy of the
-- event, a space and that copy. A timeline entry is '<stream entry id> <JSON>'; a timeline keeps its newest `keep`
-- entries and expires `ttl` seconds after its latest event. Returns how many events were written.
local function record_events(stream, maxlen, keep, ttl, entries, spec)
  local specs = {}
  for s in string.gmatch(spec, '[^\n]+') do specs[#specs + 1] = s end
  local n = 0
  for line in string.gmatch(entries, '[^\n]+') do
    n = n + 1
    local id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'event', line)
    local index, short = string.match(specs[n] or '0', '^(%d+) ?(.*)$')
    index = tonumber(index)
    if index > 0 then
      local timeline = KEYS[index]
      if redis.call('RPUSH', timeline, id .. ' ' .. (short ~= '' and short or line)) > keep then
        redis.call('LTRIM', timeline, -keep, -1)
      end
      redis.call('EXPIRE', timeline, ttl)
    end
  end
  return n
end
