"""A sink's buffer and batch sizes when its registration names none, in one place and importing nothing: the
defaults of `RegisterSink` (hook specs), of the event bus's channels and of every `SinkSettings` table."""

#: Events buffered for a sink; the oldest are dropped (and counted) when it is full.
SINK_BUFFER_SIZE = 10000
#: Most events handed to a sink's `handle` at once.
SINK_BATCH_SIZE = 100
