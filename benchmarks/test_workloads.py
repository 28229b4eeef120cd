"""Every workload of ``layers.bench`` as a pytest-benchmark; rates land in ``extra_info``."""

from __future__ import annotations

import asyncio

import pytest

from layers.bench import WORKLOADS, Result, run_workload
from layers.bench.targets import confined

PEER_NAMES = {"channels_memory", "channels_redis", "channels_redis_pubsub", "channels_postgres", "channels_rabbitmq"}


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_workload(benchmark: pytest.FixtureRequest, request: pytest.FixtureRequest, target: str,
                  workload: str) -> None:
    count = request.config.getoption("--bench-messages")
    results: list[Result] = []

    with confined([target]) as [confined_target]:  # its own prefix; only what it created is cleaned

        def once() -> None:
            results.append(asyncio.run(asyncio.wait_for(run_workload(workload, confined_target, count), 300)))

        benchmark.pedantic(once, rounds=request.config.getoption("--bench-rounds"), iterations=1)  # type: ignore[attr-defined]
    best = max(results, key=lambda r: r.rate)
    benchmark.extra_info.update(unit=WORKLOADS[workload].unit, rate=round(best.rate, 1),  # type: ignore[attr-defined]
                                messages=best.messages, error=best.error, **best.extra)
    if best.error and best.error.startswith("n/a"):
        pytest.skip(best.error)
    if best.error:
        if target in PEER_NAMES:
            pytest.xfail(f"peer fails this workload: {best.error}")
        pytest.fail(f"{target} fails {workload}: {best.error}")
    if workload == "overload":
        assert best.extra["accepted"] == best.extra["delivered"], best.extra
