"""GoPherQ's benchmark harness: `python -m bench --quick` (or --full, --smoke). Not part of the package."""
