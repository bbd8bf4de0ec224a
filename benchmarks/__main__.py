"""``python -m benchmarks [--quick] [--scenario ID ...] [--system NAME ...]``."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

from benchmarks import report
from benchmarks.harness import FULL, OK, QUICK
from benchmarks.peers import ADAPTERS
from benchmarks.scenarios import SCENARIOS, Result, run_all, select

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Event bus benchmarks: ours against floors and peers.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller N and fewer repetitions (< 40 s)"
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=[s.id for s in SCENARIOS],
        help="run only this scenario (repeatable)",
    )
    parser.add_argument(
        "--system",
        action="append",
        choices=sorted(ADAPTERS),
        help="run only this system (repeatable)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="markdown file (default: BENCHMARKS.md at the repo root; "
        "benchmarks/results/quick.md with --quick)",
    )
    parser.add_argument(
        "--chart",
        type=Path,
        help="PNG chart (default: benchmarks/chart.png; benchmarks/results/chart-quick.png "
        "with --quick)",
    )
    parser.add_argument(
        "--no-redis",
        action="store_true",
        help="skip scenario 8 (Redis end to end on a private redis-server)",
    )
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    return parser.parse_args(argv)


UNITS = {s.id: s.unit.split()[-1].split("/")[0] for s in SCENARIOS}


def progress(result: Result, seconds: float) -> None:
    ok = result.status == OK and result.median is not None
    figure = f"{result.median:10.2f} {UNITS[result.scenario]}" if ok else ""
    detail = "" if result.status == OK else f" {result.detail}"
    print(
        f"  [{result.scenario}] {result.label:34} {result.status:20} {figure:>16}"
        f"  ({seconds:4.1f} s){detail}",
        file=sys.stderr,
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    scenarios = select(args.scenario, args.system)
    if args.quick:
        output = args.output or HERE / "results" / "quick.md"
        chart = args.chart or HERE / "results" / "chart-quick.png"
    else:
        output = args.output or ROOT / "BENCHMARKS.md"
        chart = args.chart or HERE / "chart.png"

    # Importing ours imports fastapi-opinionated-core, which sets up root logging (INFO, stderr).
    # Do it once up front so every system runs under the same logging configuration.
    with contextlib.suppress(Exception):
        import fastapi_opinionated_eventbus  # noqa: F401

    load_start = round(os.getloadavg()[0], 2)
    start = time.perf_counter()
    print(f"running {'quick' if args.quick else 'full'} benchmarks...", file=sys.stderr)
    redis_skip = "skipped (--no-redis)" if args.no_redis else None
    results = run_all(scenarios, settings, progress, redis_skip)
    elapsed = time.perf_counter() - start
    report.annotate(results, scenarios)
    env = report.environment()
    env["load_start"] = load_start
    print(report.table(results, scenarios))
    print(f"\ntotal {elapsed:.1f} s", file=sys.stderr)
    if args.no_write:
        return 0
    report.write_chart(results, scenarios, chart, "quick" if args.quick else "full")
    try:
        chart_ref = chart.resolve().relative_to(output.resolve().parent)
    except ValueError:
        chart_ref = chart.resolve()
    text = report.markdown(results, scenarios, env, settings, elapsed, chart_ref)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    json_path = HERE / "results" / ("quick.json" if args.quick else "full.json")
    report.write_json(results, env, settings, json_path)
    print(f"wrote {output}, {chart}, {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
