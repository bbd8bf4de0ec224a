"""Turning results into a markdown table, a PNG chart and a JSON record."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.harness import OK, Settings
from benchmarks.scenarios import Result, Scenario

PACKAGES = (
    "fastapi-opinionated-eventbus",
    "blinker",
    "pyee",
    "fastapi-events",
    "fastapi-eventbus",
    "starlette",
    "fastapi",
    "httpx",
    "opentelemetry-api",
)

CHART_SERIES = ("floor", "ours", "blinker", "pyee", "fastapi-events", "fastapi-eventbus")
CHART_COLORS = {
    "floor": "#9e9e9e",
    "ours": "#d62728",
    "blinker": "#1f77b4",
    "pyee": "#2ca02c",
    "fastapi-events": "#9467bd",
    "fastapi-eventbus": "#ff7f0e",
}


def environment() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "event_loop": "asyncio default (no uvloop)",
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "commit": commit,
        "versions": versions,
    }


def annotate(results: list[Result], scenarios: list[Scenario]) -> None:
    """Add ratios to the floor and to the best peer of the same scenario (in ``extra``)."""
    by_id = {s.id: s for s in scenarios}
    ours_s1 = next(
        (r.median for r in results if r.scenario == "1" and r.role == "ours" and r.status == OK),
        None,
    )
    for sid in {r.scenario for r in results}:
        rows = [r for r in results if r.scenario == sid and r.status == OK]
        scenario = by_id[sid]
        floor = next((r.median for r in rows if r.system == scenario.floor), None)
        peers = [r for r in rows if r.role == "peer" and r.comparable and r.median is not None]
        best = min(peers, key=lambda r: r.median or 0.0) if peers else None
        for r in rows:
            if r.median is None or r.median <= 0:
                continue
            if floor and floor > 0 and r.system != scenario.floor:
                r.extra["x_floor"] = r.median / floor
            if best is not None and best.median and best.median > 0 and r.role != "floor":
                r.extra["x_best_peer"] = r.median / best.median
            if sid == "4" and r.role == "ours" and ours_s1:
                r.extra["x_scenario1"] = r.median / ours_s1


def _best_label_for(results: list[Result], sid: str) -> str:
    peers = [
        r
        for r in results
        if r.scenario == sid and r.role == "peer" and r.comparable and r.status == OK and r.median
    ]
    return min(peers, key=lambda r: r.median or 0.0).label if peers else ""


def _num(x: float | None) -> str:
    if x is None:
        return "—"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _ratio(x: float | None) -> str:
    if x is None:
        return "—"
    if x >= 100:
        return f"{x:,.0f}x"
    return f"{x:.2f}x" if x >= 0.1 else f"{x:.2g}x"


def _row_notes(r: Result, sid_best: str) -> str:
    parts = []
    if r.status != OK:
        parts.append(f"**{r.detail}**" if r.detail else "")
    if r.note:
        parts.append(r.note)
    if r.scenario == "5" and r.status == OK and r.median:
        parts.append(f"{1e6 / r.median:,.0f} events/s")
    if r.scenario == "4" and "x_scenario1" in r.extra:
        parts.append(f"{r.extra['x_scenario1']:.2f}x our scenario 1")
    if r.scenario == "6" and "request_us" in r.extra:
        parts.append(f"request without event {r.extra['request_us']:.0f} µs")
    if r.scenario == "7" and r.status == OK:
        parts.append(
            f"peak {r.extra['peak_per_event']:.0f} B per pending event; a second round of "
            f"{r.extra['round2_events']:,.0f} adds {r.extra['round2_per_event']:.1f} B/event "
            "(growth = leak, ~0 = high-water mark); "
            f"{r.extra['emit_per_s']:,.0f} emits/s under tracemalloc"
        )
    if r.role == "ours" and "x_best_peer" in r.extra and sid_best:
        parts.append(f"best peer: {sid_best}")
    if not r.comparable:
        parts.append("excluded from best peer")
    return "; ".join(p for p in parts if p).replace("|", "\\|")


def table(results: list[Result], scenarios: list[Scenario]) -> str:
    titles = {s.id: s for s in scenarios}
    lines = [
        "| # | system | status | median | min | unit | N x reps | x floor | x best peer | notes |",
        "|---|---|---|---:|---:|---|---|---:|---:|---|",
    ]
    for r in results:
        best = _best_label_for(results, r.scenario) if r.role != "floor" else ""
        ok = r.status == OK
        lines.append(
            "| "
            + " | ".join(
                [
                    r.scenario,
                    r.label,
                    r.status,
                    _num(r.median) if ok else "—",
                    _num(r.min) if ok else "—",
                    titles[r.scenario].unit,
                    f"{r.n:,} x {r.reps}" if ok else "—",
                    _ratio(r.extra.get("x_floor")),
                    _ratio(r.extra.get("x_best_peer")),
                    _row_notes(r, best),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def markdown(
    results: list[Result],
    scenarios: list[Scenario],
    env: dict[str, Any],
    settings: Settings,
    elapsed_s: float,
    chart: Path | None,
) -> str:
    mode = "quick" if settings.quick else "full"
    busy = " (above the CPU count: other work competed for the CPUs, expect noisy medians)"
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    legend = "\n".join(
        f"{s.id}. {s.title} ({s.unit})" + (f" — {s.note}" if s.note else "") for s in scenarios
    )
    parts = [
        "# Benchmarks",
        "",
        f"Generated by `python -m benchmarks{' --quick' if settings.quick else ''}` "
        f"({mode} run, {elapsed_s:.0f} s) on {env['date']}, commit {env['commit']}.",
        "",
        f"- Machine: {env['cpu_count']} CPUs, {env['platform']} ({env['machine']}); "
        f"1-minute load average {env['load_start']} before the run, {env['load_avg_1m']} after"
        + (busy if max(env["load_start"], env["load_avg_1m"]) > (env["cpu_count"] or 1) else ""),
        f"- Python: {env['implementation']} {env['python']}, {env['event_loop']}",
        f"- Packages: {versions}",
        "",
        "## Method",
        "",
        "Each system gets the same trivial handler (one counter increment). Each row runs in a "
        "fresh event loop: a warm-up doubles as calibration (batches of 1, 8, 64, ... operations "
        f"until one takes {settings.calib_s * 1e3:.0f} ms), then {settings.reps} timed "
        f"repetitions of N operations (N ≤ {settings.n:,}, shortened to about "
        f"{settings.rep_budget_s:.2f} s for slow systems, never below {settings.min_n}), "
        "timed with `time.perf_counter_ns`, `gc.collect()` before and the collector off during "
        "each. Median and min are per operation over the repetitions. After every batch the "
        "handler call count is checked; a mismatch is reported as FAILED VERIFICATION, never as "
        "a time. x floor divides by the scenario's floor row, x best peer by the fastest "
        "comparable peer (blinker, pyee, fastapi-events, fastapi-eventbus) of the same run.",
        "",
        f"Scenario 6 sends, per repetition, {settings.requests:,} requests with the event and "
        f"as many without it to the same app, alternating in blocks of "
        f"{settings.request_block}; a repetition's figure is the median over its block pairs of "
        "the difference per request, and the table gives median and min over "
        f"{settings.request_reps} repetitions (the min of a difference of two noisy times can be "
        "below zero). httpx's ASGITransport returns once the ASGI call returns, so work done "
        "in a middleware after the response (fastapi-events, Starlette BackgroundTask) is "
        "inside the timing; work still pending then (ours) is awaited with `drain()` at the "
        "end of each block, inside the timing too. All systems run with the root logger "
        "fastapi-opinionated-core configures on import (INFO). Scenario 7 is one run of "
        f"{settings.memory_events:,} `emit_nowait` then `drain()` under tracemalloc (plus a "
        "second round of a quarter as many, to tell a leak from a high-water mark).",
        "",
        "Scenarios:",
        "",
        legend,
        "",
        "## Results",
        "",
        table(results, scenarios),
        "",
    ]
    if chart is not None:
        parts += [f"![per-operation time, log scale]({chart.as_posix()})", ""]
    return "\n".join(parts)


def write_chart(results: list[Result], scenarios: list[Scenario], path: Path, mode: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    timed = [s for s in scenarios if s.kind in ("timed", "paired") and s.enabled]

    def row_for(scenario: Scenario, series: str) -> Result | None:
        for r in results:
            if r.scenario != scenario.id:
                continue
            if (series == "floor" and r.system == scenario.floor) or (
                series != "floor" and r.role != "floor" and r.label == series
            ):
                return r
        return None

    plotted = (row_for(sc, series) for sc in timed for series in CHART_SERIES)
    bars = [r.median for r in plotted if r and r.status == OK and r.median and r.median > 0]
    if not bars:
        return
    ymin, ymax = min(bars), max(bars)
    bottom = ymin / 4

    fig, ax = plt.subplots(figsize=(14, 7), dpi=110)
    width = 0.8 / len(CHART_SERIES)
    for si, series in enumerate(CHART_SERIES):
        color = CHART_COLORS[series]
        for xi, scenario in enumerate(timed):
            row = row_for(scenario, series)
            x = xi + (si - (len(CHART_SERIES) - 1) / 2) * width
            if row is None:
                continue
            if row.status == OK and row.median and row.median > 0:
                hatch = None if row.comparable else "//"
                ax.bar(
                    x,
                    row.median - bottom,
                    width,
                    bottom=bottom,
                    color=color,
                    edgecolor="black",
                    lw=0.4,
                    hatch=hatch,
                )
                ax.text(
                    x,
                    row.median * 1.12,
                    _num(row.median),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    rotation=90,
                )
                continue
            if row.status == OK:
                mark, mark_color = "≤ 0", "gray"
            elif row.status == "n/a":
                mark, mark_color = "n/a", "gray"
            else:
                mark = "FAILED" if row.status.startswith("FAILED") else row.status.upper()
                mark_color = color
            ax.text(
                x,
                bottom * 1.15,
                mark,
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=90,
                color=mark_color,
                fontweight="bold",
            )
    ax.set_yscale("log")
    ax.set_ylim(bottom, ymax * 10)
    ax.set_xticks(range(len(timed)))
    labels = []
    for s in timed:
        floor_row = row_for(s, "floor")
        floor = floor_row.label.removeprefix("floor: ") if floor_row else "—"
        labels.append(f"{s.id}. {s.short}\n({s.unit})\nfloor: {floor}")
    ax.set_xticklabels(labels, fontsize=8.5)
    ax.set_ylabel("µs per operation, median (log scale)")
    ax.set_title(f"Event bus cost per operation, lower is better ({mode} run)")
    handles = [Patch(color=CHART_COLORS[n], label=n) for n in CHART_SERIES]
    handles.append(
        Patch(facecolor="white", edgecolor="black", hatch="//", label="different semantics")
    )
    ax.legend(handles=handles, ncol=len(handles), loc="upper left", fontsize=8.5)
    ax.grid(axis="y", which="major", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def write_json(results: list[Result], env: dict[str, Any], settings: Settings, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"env": env, "settings": asdict(settings), "results": [asdict(r) for r in results]}
    path.write_text(json.dumps(payload, indent=1, ensure_ascii=False))
