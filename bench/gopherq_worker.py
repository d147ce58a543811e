"""`gopherq run -c <toml>` for an environment where the pycall example plugin is not installed (the smoke run).

It does what `gopherq run` does (load the settings, run_worker) and hands the plugin in as an extra plugin
module imported from examples/gopherq-pycall/src, so the test environment needs nothing installed.
Worker processes started by a supervisor import it by name; BENCH_EXTRA_PATH on PYTHONPATH covers them.
"""

from __future__ import annotations

import argparse
import sys

from gopherq.core.runner import configure_logging, run_worker
from gopherq.core.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-c", "--config", required=True)
    args = parser.parse_args()
    settings = load_settings(args.config)
    configure_logging(settings.logging.level)
    from bench.peers.gopherq import pycall_extra

    sys.exit(run_worker(settings, extra_plugins=pycall_extra()))


if __name__ == "__main__":
    main()
