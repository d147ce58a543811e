-- Shared by the scripts that write a queue's events (pulled in by `--@include events`; see core/eventlog.py):
-- the settle script, for the outcomes it records (an `event` item each; an event riding in its item is written by
-- settle.lua itself, its timeline entry kept in the hash of its period: see core/eventlog.py),
-- and the record script, for the stream sink's other events.
-- record_event(stream, keep, ttl, line, timeline, short) XADDs one event (`line`, its JSON) to `stream` and, given
-- its task's `timeline` key, appends '<stream entry id> <JSON>' to it (`short` instead of `line` when not '': a
-- shorter copy); a timeline keeps its newest `keep` entries and expires `ttl` seconds after its latest event.
-- Returns the stream entry's id. It does not trim: a script that records events calls cap_stream(stream, maxlen)
-- once, after its last one (an XADD with MAXLEN ~ checks the cap and rewrites three of its arguments for
-- replication every time, about a seventh of what an event costs Redis; the stream is over its cap by at most one
-- call's events in between, and `~` trims only whole nodes of 100 entries anyway).
-- record_events(stream, maxlen, keep, ttl, entries, spec) writes a batch, then caps the stream: each line of
-- `entries` (orjson escapes newlines, so a line is a whole event) with its line of `spec`: the KEYS index of its
-- task's timeline (0: none), a space and an item number (unused here), then, when the timeline needs a shorter
-- copy, a space and that copy. Returns how many events were written.
local function record_event(stream, keep, ttl, line, timeline, short)
  local id = redis.call('XADD', stream, '*', 'event', line)
  if timeline then
    if redis.call('RPUSH', timeline, id .. ' ' .. (short ~= '' and short or line)) > keep then
      redis.call('LTRIM', timeline, -keep, -1)
    end
    redis.call('EXPIRE', timeline, ttl)
  end
  return id
end

local function cap_stream(stream, maxlen)
  redis.call('XTRIM', stream, 'MAXLEN', '~', maxlen)
end

local function record_events(stream, maxlen, keep, ttl, entries, spec)
  -- Plain finds, not patterns: a character-class pattern walks each byte of each event in Lua (about half a
  -- microsecond per event), a plain find is a memchr.
  local written, at, spec_at = 0, 1, 1
  local find, sub = string.find, string.sub
  while at <= #entries do
    local line_end = find(entries, '\n', at, true) or #entries + 1
    local spec_end = find(spec, '\n', spec_at, true) or #spec + 1
    local space = find(spec, ' ', spec_at, true)
    local index = sub(spec, spec_at, space - 1)
    local short_at = find(spec, ' ', space + 1, true)
    local short = short_at and short_at < spec_end and sub(spec, short_at + 1, spec_end - 1) or nil
    record_event(stream, keep, ttl, sub(entries, at, line_end - 1),
                 index ~= '0' and KEYS[tonumber(index)] or nil, short or '')
    written = written + 1
    at, spec_at = line_end + 1, spec_end + 1
  end
  cap_stream(stream, maxlen)
  return written
end
