"""The channel-layer specification (``SPEC.md``) and its conformance suite.

- :class:`ConformanceSuite`: subclass it in a test module and override the ``layer_factory`` fixture.
- :func:`run_report` / ``python -m spec TARGET``: run the suite against a URL or a dotted class path and print a
  requirement-by-requirement report.
- :func:`requirements`: the numbered requirements (id -> title) of ``SPEC.md``.
"""

from .harness import Harness, Knobs
from .requirements import requirements
from .runner import SuiteRun, run_report, run_suite
from .suite import ConformanceSuite

__all__ = ["ConformanceSuite", "Harness", "Knobs", "SuiteRun", "requirements", "run_report", "run_suite"]
