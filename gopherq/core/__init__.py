"""The minimal core of GoPherQ: queue loop, worker pool, event bus, plugin manager. It knows nothing about HTTP."""
