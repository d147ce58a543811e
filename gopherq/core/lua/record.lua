-- Append events to a queue's stream and to their tasks' timelines (the `stream` sink's writes: every event that no
-- script writes itself; see core/eventlog.py).
-- KEYS: 1 the stream, 2.. the timelines the spec names
-- ARGV: 1 maxlen, 2 events kept per timeline, 3 timeline TTL (s), 4 the events (JSON, one per line), 5 the spec
--       (one line per event, see events.lua; the item is always 0)
-- Returns: how many events were written.
--@include events
return record_events(KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5])
