"""``layers bench``: run workloads against targets in alternating rounds, show progress, a table, JSON, a plot."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import platform
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from ..errors import BackendUnavailable, ConfigError
from . import DEFAULT_WORKLOADS, WORKLOADS, Result, Target, make_target, run_workload
from .targets import MissingPackage, confined
from .workloads import NOT_APPLICABLE

__all__ = ["best_results", "make_console", "run_cli", "run_rounds"]


#: Exit statuses of ``layers bench`` (also in its --help).
EXIT_OK, EXIT_OURS_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def run_cli(args: argparse.Namespace) -> int:
    try:
        from rich.console import Console
    except ImportError:
        raise MissingPackage("layers bench needs 'rich': pip install 'channel-layers[cli]'") from None
    console = make_console(Console)
    try:
        workloads = _pick_workloads(args.workload)
        with confined([args.url, *args.vs]) as targets:
            results = run_rounds(targets, workloads, args.messages, args.rounds, console)
    except BackendUnavailable as exc:
        print(f"layers: error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ConfigError as exc:  # a missing package (with its pip command), an unknown workload or peer
        print(f"layers: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    best = best_results(results)
    console.print(render_table(best, targets, workloads))
    if args.json:
        _write_json(args.json, best, results, args)
        console.print(f"JSON written to {args.json}")
    if args.plot:
        plot(best, targets, workloads, args.plot)
        console.print(f"plot written to {args.plot}")
    failed = any(r.error and not r.error.startswith(NOT_APPLICABLE) for r in best if r.target == targets[0].name)
    return EXIT_OURS_FAILED if failed else EXIT_OK


def make_console(console_class: Any, **options: Any) -> Any:
    """A rich console; without a terminal (a pipe, a file, CI) lines are never cut or wrapped at 80 columns."""
    if sys.stdout.isatty() and "file" not in options:
        return console_class(**options)
    return console_class(width=200, soft_wrap=True, **options)


def _pick_workloads(names: Sequence[str]) -> list[str]:
    if not names:
        return list(DEFAULT_WORKLOADS)
    if "all" in names:
        return list(WORKLOADS)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise ConfigError(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(WORKLOADS)}")
    return list(names)


def run_rounds(targets: Sequence[Target], workloads: Sequence[str], count: int, rounds: int,
               console: Any = None) -> list[Result]:
    """Run every (workload, target) ``rounds`` times, alternating targets so noise hits them alike."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    jobs = [(r, w, t) for r in range(rounds) for w in workloads for t in targets]
    results: list[Result] = []
    hung: set[tuple[str, str]] = set()  # a layer that hung once hangs again: later rounds skip it
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    quiet = console is not None and not console.is_terminal  # a pipe or a file: no progress line
    with Progress(*columns, console=console, transient=True, disable=quiet) as progress:
        task = progress.add_task("benchmarking", total=len(jobs))
        for round_no, workload, target in jobs:
            progress.update(task, description=f"round {round_no + 1}/{rounds} {workload} on {target.name}")
            if (workload, target.name) not in hung:
                run = _run_isolated if target.isolated else _run_here
                result = run(workload, target, count)
                if result.error == _TIMED_OUT:
                    hung.add((workload, target.name))
                results.append(result)
            progress.advance(task)
    return results


_TIMED_OUT = "timed out (the layer hung or was far too slow)"


def _time_limit(count: int) -> float:
    return max(60.0, count / 50)


def _run_here(workload: str, target: Target, count: int) -> Result:
    return asyncio.run(_timed(workload, target, count))


def _run_in_child(workload: str, spec: str, prefix: str, count: int) -> Result:
    return _run_here(workload, make_target(spec, prefix), count)


def _run_isolated(workload: str, target: Target, count: int) -> Result:
    """Run in a child process, so whatever the layer leaves open (connections, tasks) goes when it exits."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        future = pool.submit(_run_in_child, workload, target.spec, target.prefix, count)
        try:
            return future.result(timeout=_time_limit(count) + 60)
        except Exception as exc:  # a child that hung past its own timeout, or died
            for process in list(pool._processes.values()):
                process.kill()
            return Result(workload, target.name, error=f"child process failed: {type(exc).__name__}: {exc}"[:200])


async def _timed(workload: str, target: Target, count: int) -> Result:
    try:
        return await asyncio.wait_for(run_workload(workload, target, count), timeout=_time_limit(count))
    except asyncio.TimeoutError:
        return Result(workload, target.name, error=_TIMED_OUT)


def best_results(results: Sequence[Result]) -> list[Result]:
    """The fastest successful round per (workload, target); a target that never succeeded keeps its error."""
    best: dict[tuple[str, str], Result] = {}
    for result in results:
        key = (result.workload, result.target)
        current = best.get(key)
        if current is None or (current.error and not result.error) or result.rate > current.rate:
            best[key] = result
    return list(best.values())


def render_table(best: Sequence[Result], targets: Sequence[Target], workloads: Sequence[str]) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    # The heading is a line of its own: as a table title it wraps into the table's width.
    heading = Text("throughput (msgs/s; deliveries/s for group workloads), best of the rounds", style="bold")
    table = Table()
    table.add_column("workload", no_wrap=True)
    for target in targets:
        table.add_column(target.name, justify="right", overflow="fold")
    if len(targets) > 1:
        others = " / ".join(target.name for target in targets[1:])
        table.add_column(f"first column vs {others}", justify="right", overflow="fold")
    by_key = {(r.workload, r.target): r for r in best}
    for workload in workloads:
        row = [workload]
        cells = [by_key.get((workload, t.name)) for t in targets]
        row += [_cell(r) for r in cells]
        if len(targets) > 1:
            row.append(_ratios(cells))
        table.add_row(*row)
    return Group(heading, table)


def _cell(result: Result | None) -> str:
    if result is None:
        return "-"
    if result.error:
        from rich.markup import escape  # errors quote brackets ("[Errno 111]") that are not markup

        error = " ".join(result.error.replace("*", "").split())  # one line: peers raise banners
        if error.startswith(NOT_APPLICABLE):
            return f"[dim]{escape(error[:40])}[/dim]"
        return f"[red]fails: {escape(error[:60])}[/red]"
    details = ", ".join(f"{k}={v}" for k, v in result.extra.items() if not isinstance(v, dict))
    return f"{result.rate:,.0f}" + (f"\n[dim]{details}[/dim]" if details else "")


def _ratios(cells: Sequence[Result | None]) -> str:
    ours = cells[0]
    parts = []
    for peer in cells[1:]:
        if ours is None or peer is None or ours.error or peer.error or not peer.rate:
            parts.append("n/a")
        else:
            parts.append(f"{ours.rate / peer.rate:.2f}x")
    return " / ".join(parts)


def environment() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("channel-layers", "msgpack", "redis", "psycopg", "pika", "channels", "channels-redis",
                    "channels-postgres", "channels-rabbitmq"):
        with contextlib.suppress(PackageNotFoundError):
            versions[package] = version(package)
    import os

    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
            "versions": versions}


def _write_json(path: str, best: Sequence[Result], results: Sequence[Result], args: argparse.Namespace) -> None:
    payload = {"environment": environment(), "messages": args.messages, "rounds": args.rounds,
               "best": [r.as_dict() for r in best], "all": [r.as_dict() for r in results]}
    with open(path, "w") as file:
        json.dump(payload, file, indent=2)


def plot(best: Sequence[Result], targets: Sequence[Target], workloads: Sequence[str], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install matplotlib") from None
    by_key = {(r.workload, r.target): r.rate for r in best}
    width = 0.8 / len(targets)
    fig, ax = plt.subplots(figsize=(min(12.0, max(7.0, 0.8 * len(workloads) + 3)), 5))
    for index, target in enumerate(targets):
        xs = [w + index * width for w in range(len(workloads))]
        rates = [by_key.get((w, target.name), 0) for w in workloads]
        bars = ax.bar(xs, rates, width, label=target.name)
        for bar, rate in zip(bars, rates, strict=True):
            if not rate:  # a failing or not applicable run: say so where its bar would be
                ax.annotate("n/a", (bar.get_x() + bar.get_width() / 2, 0.01), xycoords=("data", "axes fraction"),
                            ha="center", va="bottom", fontsize=8, color="gray", rotation=90)
    ax.set_xticks([w + width * (len(targets) - 1) / 2 for w in range(len(workloads))], workloads,
                  rotation=30 if len(workloads) > 5 else 0, ha="right" if len(workloads) > 5 else "center")
    rates = [rate for rate in by_key.values() if rate]
    if rates and max(rates) > 30 * min(rates):  # on a linear axis the small bars would be invisible
        ax.set_yscale("log")
        ax.set_ylabel("messages (deliveries) per second, log scale")
    else:
        ax.set_ylabel("messages (deliveries) per second")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:,.0f}"))
    ax.set_title("channel-layers throughput, best round\n(n/a: the run failed or does not apply; see the table)",
                 fontsize=11)
    # Below the axes, so it never covers a bar.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18 if len(workloads) > 5 else -0.1),
              ncol=min(len(targets), 3), frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
