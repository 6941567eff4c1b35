"""`python -m bench` (`make bench`): start the stack, run the benchmarks, write
bench/results/<timestamp>.json and print a markdown summary.

PARLEY_BENCH_SCALE=small runs every benchmark in reduced form;
PARLEY_BENCH_ONLY=turns,history,scale,streaming,tools,multiprocess picks some;
PARLEY_BENCH_DATABASE_URL=postgresql+asyncpg://... runs against PostgreSQL (its tables are
dropped first) instead of a fresh SQLite file. `multiprocess` runs on a stack of its own, on
PostgreSQL always (bench/multiprocess.py). PARLEY_BENCH_WORKER_COMMAND /
PARLEY_BENCH_API_COMMAND replace `python -m src.cli worker` / `api` (e.g. to run them under
py-spy); PARLEY_BENCH_DEV_SERVER=default starts the dev server without Parley's tuning.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.history import run_history_benchmarks
from bench.multiprocess import require_postgres, run_multiprocess_benchmarks
from bench.report import markdown_summary
from bench.scale import run_scale_benchmarks
from bench.sizes import sizes_from_environment
from bench.stack import REPO, StackOptions, describe_machine, running_stack
from bench.streaming import run_streaming_benchmarks
from bench.tools import run_tool_benchmarks
from bench.turns import run_turn_benchmarks

BENCHMARKS = ("turns", "history", "scale", "streaming", "tools", "multiprocess")
# These share one stack; `multiprocess` starts its own (two workers, two APIs, PostgreSQL).
_SHARED_STACK = ("turns", "history", "scale", "streaming", "tools")


async def run(results_dir: Path) -> dict[str, Any]:
    sizes = sizes_from_environment()
    chosen = [
        b.strip() for b in os.environ.get("PARLEY_BENCH_ONLY", ",".join(BENCHMARKS)).split(",")
    ]
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        raise SystemExit(f"PARLEY_BENCH_ONLY: unknown benchmark(s) {sorted(unknown)}")
    if "multiprocess" in chosen:
        await require_postgres()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    options = StackOptions(
        logs_dir=results_dir / f"{stamp}-logs",
        database_url=os.environ.get("PARLEY_BENCH_DATABASE_URL") or None,
        max_cached_workflows=sizes.max_cached_workflows,
        turns_per_run=sizes.turns_per_run,
    )
    # e.g. "py-spy record -o worker.svg -- python -m src.cli worker" to profile under load
    for process in ("worker", "api"):
        command = os.environ.get(f"PARLEY_BENCH_{process.upper()}_COMMAND")
        if command:
            setattr(options, f"{process}_command", shlex.split(command))
    if os.environ.get("PARLEY_BENCH_DEV_SERVER", "tuned") == "default":
        options.dev_server_args = []  # the dev server's own settings, for a before/after
    results: dict[str, Any] = {
        "started": stamp,
        "machine": describe_machine(),
        "sizes": sizes.__dict__,
        "database": "postgresql" if options.database_url else "sqlite",
        "dev_server_args": options.dev_server_args,
    }
    started = time.monotonic()
    shared = [name for name in chosen if name in _SHARED_STACK]
    if shared:
        async with running_stack(options) as stack:
            for name in shared:
                print(f"== {name} ...", flush=True)
                began = time.monotonic()
                if name == "turns":
                    results[name] = await run_turn_benchmarks(stack, sizes)
                elif name == "history":
                    results[name] = await run_history_benchmarks(stack, sizes)
                elif name == "streaming":
                    results[name] = await run_streaming_benchmarks(stack, sizes)
                elif name == "tools":
                    results[name] = await run_tool_benchmarks(stack, sizes)
                else:
                    results[name] = await run_scale_benchmarks(stack, sizes)
                results[name]["seconds"] = round(time.monotonic() - began, 1)
    if "multiprocess" in chosen:
        print("== multiprocess ...", flush=True)
        began = time.monotonic()
        results["multiprocess"] = await run_multiprocess_benchmarks(options, sizes)
        results["multiprocess"]["seconds"] = round(time.monotonic() - began, 1)
    results["seconds"] = round(time.monotonic() - started, 1)
    path = results_dir / f"{stamp}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    results["path"] = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
    return results


def main() -> None:
    results_dir = Path(os.environ.get("PARLEY_BENCH_RESULTS", REPO / "bench" / "results"))
    results_dir.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(run(results_dir))
    print(markdown_summary(results))
    print(f"\nresults: {results['path']}")


if __name__ == "__main__":
    main()
