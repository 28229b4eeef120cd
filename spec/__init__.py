"""The channel-layer specification (``SPEC.md``) and its conformance suite."""
