"""Django settings for the ``--django-settings`` test of the conformance runner."""

SECRET_KEY = "spec-tests"
INSTALLED_APPS: list[str] = []
SPEC_TEST_SETTING = "configured"
