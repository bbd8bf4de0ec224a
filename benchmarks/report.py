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

from benchmarks import targets
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
    if r.scenario == "8" and r.status == OK:
        parts.append(_redis_notes(r))
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


def _redis_notes(r: Result) -> str:
    x = r.extra
    text = (
        f"{x['events_per_s']:,.0f} events/s best of {r.reps} rounds "
        f"(median {x['median_events_per_s']:,.0f})"
        if r.reps > 1
        else f"{x['events_per_s']:,.0f} events/s (one round)"
    )
    if r.role == "ours":
        text += (
            f"; {x['ratio_to_floor']:.0%} of the awaited floor, "
            f"{x['ratio_to_pipelined_floor']:.0%} of the pipelined floor (best rounds); "
            f"`await emit()` p50 {x['emit_p50_us']:.0f} µs, p99 {x['emit_p99_us']:.0f} µs "
            f"one at a time, p50 {x['emit_loaded_p50_us']:,.0f} µs, "
            f"p99 {x['emit_loaded_p99_us']:,.0f} µs under the throughput load"
        )
    return text


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
        "Scenario 8 starts a private `redis-server` (127.0.0.1, a free port, no persistence) "
        "for the run and stops it afterwards. `benchmarks/redis_bench.py` emits in one process "
        "and handles in another, on the same Redis, with the same stream entry: the floor is "
        "64 tasks each awaiting a bare redis-py `XADD`, read by `XREADGROUP COUNT 64` + one "
        "`XACK` per batch; the pipelined floor is one task sending `XADD` pipelines of 64; "
        "ours is 64 tasks each awaiting `bus.emit()`, handled by a bus with one async handler "
        "in the other process. Throughput is events / (last handler done - first emit "
        f"started), {'one round' if settings.quick else 'three rounds'} of each, interleaved; "
        "the table's median and min are over the rounds in µs/event, the notes give events/s "
        "of the best round, and the ratios (best round over best round) and `await emit()` "
        "latency (p50/p99, one at a time and under the throughput load). Each consumer must "
        "have handled exactly N events and left none pending, or the rows say FAILED "
        "VERIFICATION.",
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
    parts += [targets.markdown(targets.evaluate(results, env["cpu_count"] or 1)), ""]
    return "\n".join(parts)


def _short(x: float) -> str:
    """A bar label that fits over a narrow bar."""
    if abs(x) >= 10_000:
        return f"{x / 1e3:.0f}k"
    if abs(x) >= 1_000:
        return f"{x / 1e3:.1f}k"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _mark(row: Result) -> str:
    if row.status == OK:
        return "≤ 0"
    if row.status == "n/a":
        return "n/a"
    return "FAILED" if row.status.startswith("FAILED") else row.status.upper()


def write_chart(results: list[Result], scenarios: list[Scenario], path: Path, mode: str) -> None:
    """Small multiples, 9 in wide: one panel per timed scenario (µs, log scale, each its own
    scale), one for Redis if it ran (events/s, linear), and the legend."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    def row_for(scenario: Scenario, series: str) -> Result | None:
        for r in results:
            if r.scenario != scenario.id:
                continue
            if (series == "floor" and r.system == scenario.floor) or (
                series != "floor" and r.role != "floor" and r.label == series
            ):
                return r
        return None

    present = {r.scenario for r in results}
    timed = [
        s
        for s in scenarios
        if s.kind in ("timed", "paired", "user-call") and s.enabled and s.id in present
    ]
    redis_rows = [r for r in results if r.scenario == "8"]
    redis_ran = any(r.status != "n/a" for r in redis_rows)
    redis_scenario = next((s for s in scenarios if s.id == "8"), None)
    panels = len(timed) + (1 if redis_ran else 0)
    if not panels:
        return
    cols = 4
    rows = math.ceil((panels + 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(9, 3.05 * rows + 0.5), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[panels:]:
        ax.axis("off")

    for ax, scenario in zip(flat, timed, strict=False):
        shown = [r for r in (row_for(scenario, s) for s in CHART_SERIES) if r is not None]
        values = [r.median for r in shown if r.status == OK and r.median and r.median > 0]
        low, high = (min(values), max(values)) if values else (1.0, 10.0)
        bottom = low / 3
        for xi, series in enumerate(CHART_SERIES):
            row = row_for(scenario, series)
            if row is None:
                continue
            color = CHART_COLORS[series]
            if row.status == OK and row.median and row.median > 0:
                ax.bar(
                    xi,
                    row.median - bottom,
                    0.8,
                    bottom=bottom,
                    color=color,
                    edgecolor="black",
                    lw=0.4,
                    hatch=None if row.comparable else "///",
                )
                ax.text(
                    xi,
                    row.median * 1.15,
                    _short(row.median),
                    ha="center",
                    va="bottom",
                    fontsize=7.5,
                )
            else:
                ax.text(
                    xi,
                    bottom * 1.2,
                    _mark(row),
                    ha="center",
                    va="bottom",
                    fontsize=7.5,
                    rotation=90,
                    color="gray" if row.status in (OK, "n/a") else color,
                    fontweight="bold",
                )
        ax.set_yscale("log")
        ax.set_ylim(bottom, high * 12)
        ax.set_xlim(-0.6, len(CHART_SERIES) - 0.4)
        ax.set_xticks([])
        floor_row = row_for(scenario, "floor")
        floor = floor_row.label.removeprefix("floor: ") if floor_row else "—"
        ax.set_xlabel(f"floor: {floor}", fontsize=7)
        ax.set_title(f"{scenario.id}. {scenario.short}", fontsize=8.5, loc="left")
        ax.set_ylabel(f"{scenario.unit}, log", fontsize=7, labelpad=1)
        ax.tick_params(axis="y", labelsize=7, pad=1)
        ax.grid(axis="y", which="major", alpha=0.3)

    if redis_ran and redis_scenario is not None:
        ax = flat[len(timed)]
        order = (
            ("redis-py", "XADD\nawaited"),
            ("redis-py-pipelined", "XADD\npipelined"),
            ("ours", "ours"),
        )
        by_system = {r.system: r for r in redis_rows}
        eps = [
            by_system[k].extra.get("events_per_s", 0.0)
            if k in by_system and by_system[k].status == OK
            else 0.0
            for k, _ in order
        ]
        top = max(eps) or 1.0
        for xi, ((key, _), value) in enumerate(zip(order, eps, strict=True)):
            row = by_system.get(key)
            color = CHART_COLORS["ours"] if key == "ours" else CHART_COLORS["floor"]
            if row is not None and row.status == OK and value > 0:
                ax.bar(
                    xi,
                    value / 1e3,
                    0.7,
                    color=color,
                    edgecolor="black",
                    lw=0.4,
                    hatch="..." if key == "redis-py-pipelined" else None,
                )
                ax.text(
                    xi,
                    value / 1e3 + top / 1e3 * 0.02,
                    f"{value / 1e3:.1f}k",
                    ha="center",
                    va="bottom",
                    fontsize=7.5,
                )
            elif row is not None:
                ax.text(
                    xi,
                    top / 1e3 * 0.05,
                    _mark(row),
                    ha="center",
                    va="bottom",
                    fontsize=7.5,
                    rotation=90,
                    color=color,
                    fontweight="bold",
                )
        ax.set_ylim(0, top / 1e3 * 1.18)
        ax.set_xticks(range(len(order)), [label for _, label in order], fontsize=7)
        ax.tick_params(axis="y", labelsize=7, pad=1)
        ax.tick_params(axis="x", length=0, pad=2)
        ours = by_system.get("ours")
        if ours is not None and ours.status == OK:
            ax.set_xlabel(
                f"ours = {ours.extra['ratio_to_floor']:.0%} / "
                f"{ours.extra['ratio_to_pipelined_floor']:.0%} of the floors",
                fontsize=7.5,
            )
        ax.set_title(f"8. {redis_scenario.short}\n(higher is better)", fontsize=8.5, loc="left")
        ax.set_ylabel("k events/s, best round", fontsize=7, labelpad=1)
        ax.grid(axis="y", which="major", alpha=0.3)

    legend_ax = flat[panels]
    handles = [
        Patch(facecolor=CHART_COLORS[n], edgecolor="black", lw=0.4, label=n) for n in CHART_SERIES
    ]
    handles.append(
        Patch(facecolor="white", edgecolor="black", hatch="///", label="different semantics")
    )
    if redis_ran:
        handles.append(
            Patch(
                facecolor=CHART_COLORS["floor"],
                edgecolor="black",
                hatch="...",
                label="pipelined floor (8)",
            )
        )
    legend_ax.legend(
        handles=handles,
        loc="center",
        fontsize=7.5,
        frameon=False,
        title="median per operation;\nlower is better (1-6)",
        title_fontsize=7.5,
    )
    fig.suptitle(f"Event bus benchmarks ({mode} run)", fontsize=10)
    fig.tight_layout(h_pad=1.2, w_pad=0.6)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=200)
    plt.close(fig)


def write_json(results: list[Result], env: dict[str, Any], settings: Settings, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"env": env, "settings": asdict(settings), "results": [asdict(r) for r in results]}
    path.write_text(json.dumps(payload, indent=1, ensure_ascii=False))
