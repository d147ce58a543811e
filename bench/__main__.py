"""`python -m bench --quick | --full | --smoke`: run the benchmarks and write docs/benchmarks.md and a chart.

--quick and --full run inside bench/.venv (created and filled from bench/requirements.txt on first use);
--smoke runs GoPherQ alone in the current environment (the test suite's), with a Python HTTP target when
nginx is absent. See bench/README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import venv

REPO = Path(__file__).resolve().parent.parent


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="GoPherQ benchmark harness")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick", help="small sizes, about 7 min")
    mode.add_argument("--full", dest="mode", action="store_const", const="full", help="the issue's sizes, 30+ min")
    mode.add_argument("--smoke", dest="mode", action="store_const", const="smoke", help="GoPherQ only, seconds")
    parser.add_argument("--only", default="", help="comma-separated systems (e.g. gopherq,celery)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: soak, profile, ceilings, api")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md", help="markdown report")
    parser.add_argument("--img", type=Path, default=REPO / "docs" / "img", help="directory for the PNG chart")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default: 3, smoke: 1)")
    parser.add_argument("--report", type=Path, default=None, help="render the report from a saved results JSON")
    parser.add_argument("--no-venv", action="store_true", help="run in the current environment as it is")
    args = parser.parse_args(argv)
    args.mode = args.mode or "quick"
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.report is not None:
        from bench.harness import render_saved

        render_saved(args.report.resolve(), args.out.resolve(), args.img.resolve())
        return 0
    if args.mode != "smoke" and not args.no_venv and not venv.inside():
        venv.ensure()
        venv.reexec(argv)
    from bench.harness import Run

    only = [name.strip() for name in args.only.split(",") if name.strip()] or None
    skip = {part.strip() for part in args.skip.split(",") if part.strip()}
    results = Run(args.mode, only, args.out.resolve(), args.img.resolve(), skip, args.reps).main()
    return 1 if results.errors and args.mode == "smoke" else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
