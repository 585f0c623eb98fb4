"""`python -m benchmarks --out REPORT.md [--quick] [--work DIR]`: measure, keep results.json beside, render."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="docs/benchmarks.md",
                        help="the report (markdown); its results (.json) and two PNGs go beside it")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test whose numbers mean nothing")
    parser.add_argument("--work", default=None,
                        help="work folder for the split, the run and results.json (default: a new bench/<stamp>/); "
                             "must not exist or be empty")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override of the benchmarked model and its variants, as `arena train --set` "
                             "(e.g. model.path=DIR: another base model); the report lists it")
    return parser


def command_line(argv: list[str]) -> str:
    return " ".join(["python -m benchmarks", *argv])


def main(argv: list[str] | None = None) -> int:
    """Measure into a fresh work folder, copy its results.json beside the report (`<out>.json`), then render the
    report and its PNGs from that file. Exit 2 with `error: ...` on a UserError."""
    from arena.cli import OFFLINE_ENV

    for name, value in OFFLINE_ENV.items():
        os.environ.setdefault(name, value)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    from arena.errors import UserError
    from benchmarks import measure, report

    out = Path(args.out)

    def bench():
        if out.suffix == ".json":
            raise UserError(f"--out {out}: the report is markdown; its results go beside it as {out.stem}.json")
        results = measure.run(quick=args.quick, work=args.work, command=command_line(argv), overrides=args.overrides)
        out.parent.mkdir(parents=True, exist_ok=True)
        kept = shutil.copyfile(results, out.with_suffix(".json"))
        report.render_file(kept, out)
        print(f"wrote {out}, {kept.name} and its PNGs beside it; raw results in {results}")

    return report.exit_status(bench)


if __name__ == "__main__":
    sys.exit(main())
