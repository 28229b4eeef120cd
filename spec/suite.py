"""``ConformanceSuite``: the abstract pytest class every channel layer runs unchanged.

Subclass it in a test module (the subclass name must start with ``Test``) and override one fixture::

    import pytest
    from spec import ConformanceSuite

    class TestMyLayer(ConformanceSuite):
        @pytest.fixture
        def layer_factory(self):
            # a callable(**overrides) -> a NEW layer instance (on the same server, for shared-state layers)
            return lambda **overrides: MyLayer(hosts=["..."], prefix="spec-tests", **overrides)

What the suite may assume about the layer comes from the layer class's ``spec_knobs`` dict (see
:class:`spec.harness.Knobs`), overridable by a ``spec_knobs`` dict on the subclass.  Checks whose capability is
missing (an extension, ``close()``, ``shares_state``, a capability listed in the knob ``lacks``) are skipped with
a reason starting ``n/a:`` (not applicable) or ``not run:`` (e.g. no ``process_target``).  Every requirement has a
tier (core, recommended, strict) in ``SPEC.md``; add ``--spec-report`` to the pytest run for the report per
requirement and tier.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from .checks.basics import ApiChecks, MessageChecks, NameChecks
from .checks.delivery import CancelChecks, DeliveryChecks, ProcessChecks
from .checks.group_delivery import GroupDeliveryChecks
from .checks.groups import GroupChecks
from .checks.lifecycle import CloseChecks, FlushChecks, SyncChecks
from .checks.limits import CapacityChecks, ExpiryChecks, GroupExpiryChecks
from .checks.multi import MultiChecks
from .checks.operations import OperationsChecks
from .checks.ownership import OwnershipChecks
from .harness import Harness, Knobs
from .target import LayerFactory

__all__ = ["ConformanceSuite"]


class ConformanceSuite(
    ApiChecks,
    NameChecks,
    MessageChecks,
    DeliveryChecks,
    ProcessChecks,
    CapacityChecks,
    ExpiryChecks,
    GroupChecks,
    GroupDeliveryChecks,
    GroupExpiryChecks,
    FlushChecks,
    CloseChecks,
    CancelChecks,
    SyncChecks,
    MultiChecks,
    OwnershipChecks,
    OperationsChecks,
):
    """Every check of ``SPEC.md``.  Not collected itself (its name does not start with ``Test``)."""

    #: Knob overrides for this subclass, applied over the layer class's ``spec_knobs``.
    spec_knobs: ClassVar[dict[str, Any]] = {}

    @pytest.fixture
    def layer_factory(self) -> LayerFactory:
        """Override: return a callable(**overrides) that makes a new layer instance."""
        raise NotImplementedError(f"{type(self).__name__} must override the layer_factory fixture")

    @pytest.fixture
    def harness(self, layer_factory: LayerFactory, request: pytest.FixtureRequest) -> Harness:
        # No layer is made here: the harness makes the first one inside the check's event loop and reads the
        # layer class's spec_knobs, extensions and close() from it there.
        suite_knobs = type(self).spec_knobs
        marker = request.node.get_closest_marker("spec_needs")
        return Harness(
            layer_factory, Knobs.resolve(suite_knobs), seed=request.node.nodeid, suite_knobs=suite_knobs,
            needs=marker.args if marker else (),
        )
