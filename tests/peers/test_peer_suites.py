"""The peers' own test suites, run unchanged against each of our backends with only the layer factory swapped.

channels, channels_redis, channels_postgres and channels_rabbitmq test their layers through the public API that
Channels users call; whatever of that applies to us must pass on every backend of ours, so the next difference
shows up here and not in a user's deployment. Their test files are fetched at test time (``peer_sources``: pinned,
cached, nothing committed), each suite runs in a pytest process of its own (their ``tests`` packages and fixtures
must not meet ours) with ``peer_plugin`` swapping their layer class for ours, and the skip list with its reasons
lives in ``peer_catalog``. Suites run four at a time: most of their time is spent in the tests' own sleeps.

A suite whose tests cannot be fetched is skipped with the reason (channels and channels_rabbitmq publish theirs only
on GitHub); set ``LAYERS_PEER_REQUIRED=1`` where the network is expected, to make that a failure instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.peers.peer_catalog import BACKENDS, SUITES, entries_for
from tests.peers.peer_sources import SOURCES, SourceUnavailable, cache_root, ensure_source
from tests.servers import AMQP_URL, POSTGRES_DSN, REDIS_URL, port_open

HERE = Path(__file__).resolve().parent
PARALLEL = 4
SUITE_TIMEOUT = 600  # seconds for one suite on one backend (they take 5-60 s, most of it their own sleeps)

_SERVICE_URLS = {"redis": REDIS_URL, "postgres": POSTGRES_DSN, "amqp": AMQP_URL}
_DEFAULT_PORTS = {"redis": 6379, "postgres": 5432, "amqp": 5672}

_UNFETCHABLE = "the peer's tests cannot be fetched: "

#: (suite, backend) -> the JSON the peer plugin wrote, for the terminal summary in conftest.py
REPORTS: dict[tuple[str, str], dict[str, Any]] = {}


def _unreachable(service: str) -> str | None:
    if service == "memory":
        return None
    parts = urlsplit(_SERVICE_URLS[service])
    if port_open(parts.port or _DEFAULT_PORTS[service], parts.hostname or "127.0.0.1"):
        return None
    return f"the shared {service} server at {parts.hostname}:{parts.port or _DEFAULT_PORTS[service]} is not reachable"


class SuiteRun:
    """One peer suite against one backend, run in its own pytest process."""

    def __init__(self, suite: str, backend: str, workdir: Path) -> None:
        self.suite, self.backend = suite, backend
        self.report = workdir / f"{suite}-{backend}.json"
        self.log = workdir / f"{suite}-{backend}.log"

    def skip_reason(self) -> str | None:
        for service in (self.backend, *SUITES[self.suite].needs):
            reason = _unreachable(service)
            if reason:
                return reason
        return None

    def __call__(self, root: Path) -> dict[str, Any]:
        env = {**os.environ,
               "LAYERS_PEER_SUITE": self.suite, "LAYERS_PEER_BACKEND": self.backend,
               "LAYERS_PEER_PREFIX": "peer" + uuid.uuid4().hex[:10], "LAYERS_PEER_REPORT": str(self.report),
               "LAYERS_TEST_REDIS_URL": REDIS_URL, "LAYERS_TEST_POSTGRES_DSN": POSTGRES_DSN,
               "LAYERS_TEST_AMQP_URL": AMQP_URL,
               "PYTHONPATH": os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])}
        command = [sys.executable, "-m", "pytest", "-c", str(HERE / "peers.ini"), "--rootdir", str(root),
                   "--noconftest", "-p", "peer_plugin", "-q", "-rfEsxX", *SUITES[self.suite].files]
        with self.log.open("wb") as log:
            # cwd is the peer's tree, so ``tests`` there is their package, never ours
            subprocess.run(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                           timeout=SUITE_TIMEOUT, check=False)
        if not self.report.exists():
            tail = self.log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"the {self.suite} suite on {self.backend} wrote no report; its output:\n{tail}")
        data: dict[str, Any] = json.loads(self.report.read_text())
        return data


@pytest.fixture(scope="session")
def peer_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        dict[tuple[str, str], Future[dict[str, Any]] | str]]:
    """Starts every selected (suite, backend) run at once, PARALLEL at a time; a value is a Future or a skip reason."""
    workdir = tmp_path_factory.mktemp("peer-suites")
    selected = [item.callspec.params for item in request.session.items
                if getattr(item, "originalname", "") == "test_peer_suite" and hasattr(item, "callspec")]
    runs: dict[tuple[str, str], Future[dict[str, Any]] | str] = {}
    roots: dict[str, Path | str] = {}  # suite -> its test tree, or why it cannot be fetched
    with ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="peer-suite") as pool:
        for params in selected:
            run = SuiteRun(params["suite"], params["backend"], workdir)
            reason = run.skip_reason()
            if not reason and run.suite not in roots:
                try:
                    roots[run.suite] = ensure_source(SOURCES[run.suite])
                except SourceUnavailable as exc:
                    roots[run.suite] = (f"{_UNFETCHABLE}{exc}. Seed {cache_root()} from a clone: python "
                                        f"tests/peers/peer_sources.py --from-git CLONE {run.suite}")
            root = roots.get(run.suite)
            reason = reason or (root if isinstance(root, str) else None)
            runs[(run.suite, run.backend)] = reason if reason else pool.submit(run, root)
        yield runs
        for future in runs.values():
            if isinstance(future, Future):
                future.cancel()


def _problems(data: dict[str, Any]) -> list[str]:
    """What makes the run fail: a failing or erroring test, a stale skip-list entry, a failed clean-up."""
    problems = [f"{outcome_id}: {result['outcome'].upper()}: {result['message'][:600]}"
                for outcome_id, result in data["results"].items() if result["outcome"] in ("failed", "error")]
    uncollected = {node for node, result in data["results"].items()
                   if "::" not in node and result["outcome"] == "error"}
    problems += [f"skip-list entry {entry} matches no test: remove it or fix its name"
                 for entry in data["unmatched_entries"] if entry.split("::", 1)[0] not in uncollected]
    if data["cleanup_error"]:
        problems.append(f"cleaning up after the run failed: {data['cleanup_error']}")
    return problems


@pytest.mark.timeout(SUITE_TIMEOUT + 60)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("suite", list(SUITES))
def test_peer_suite(suite: str, backend: str, peer_runs: dict[tuple[str, str], Future[dict[str, Any]] | str]) -> None:
    run = peer_runs[(suite, backend)]
    if isinstance(run, str):
        if run.startswith(_UNFETCHABLE) and os.environ.get("LAYERS_PEER_REQUIRED"):
            pytest.fail(f"LAYERS_PEER_REQUIRED is set: {run}")
        pytest.skip(run)
    data = run.result(timeout=SUITE_TIMEOUT + 30)
    REPORTS[(suite, backend)] = data
    problems = _problems(data)
    assert not problems, (f"{SOURCES[suite].key} suite on {backend}: {len(problems)} problem(s)\n  "
                          + "\n  ".join(problems))


def test_skip_list_names_real_suites_and_backends() -> None:
    """Every entry of the reviewed list belongs to a suite we run and names its test as ``file::test``."""
    for suite in SUITES:
        for backend in BACKENDS:
            for test, entry in entries_for(suite, backend).items():
                assert test.split("::", 1)[0] in SUITES[suite].files, test
                assert entry.kind in ("skip", "different") and entry.reason, test
                assert "[" not in test, f"{test}: entries name a test without its parameters"
