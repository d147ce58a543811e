-- Shared by the scripts that write a queue's events (pulled in by `--@include events`; see core/eventlog.py):
-- the settle script, for the outcomes it records, and the record script, for the stream sink's other events.
-- record_events(stream, maxlen, keep, ttl, entries, spec, settled) XADDs each line of `entries` (an event as JSON;
-- orjson escapes newlines, so a line is a whole event) to `stream`, capped at about `maxlen`. `spec` has one line
-- per event: the KEYS index of its task's timeline (0: none), a space and the (0-based) settle item it belongs to,
-- then, when the timeline needs a shorter copy of the event, a space and that copy. With `settled` (a table of the
-- items settled now), the events of other items are skipped. A timeline entry is '<stream entry id> <JSON>'; a
-- timeline keeps its newest `keep` entries and expires `ttl` seconds after its latest event. Returns how many
-- events were written.
local function record_events(stream, maxlen, keep, ttl, entries, spec, settled)
  local specs = string.gmatch(spec, '(%d+) (%d+) ?([^\n]*)')  -- one spec line per entry, read alongside
  local written = 0
  for line in string.gmatch(entries, '[^\n]+') do
    local index, item, short = specs()
    if settled == nil or settled[tonumber(item)] then
      written = written + 1
      local id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'event', line)
      if index ~= '0' then
        local timeline = KEYS[tonumber(index)]
        if redis.call('RPUSH', timeline, id .. ' ' .. (short ~= '' and short or line)) > keep then
          redis.call('LTRIM', timeline, -keep, -1)
        end
        redis.call('EXPIRE', timeline, ttl)
      end
    end
  end
  return written
end
