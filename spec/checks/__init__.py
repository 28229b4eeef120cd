"""The conformance checks, one mixin per area of ``SPEC.md``; ``spec.suite.ConformanceSuite`` combines them."""
