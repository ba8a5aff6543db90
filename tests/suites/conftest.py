"""Keeps the vendored SDK suites out of the repository's own pytest run.

They hard-code localhost:8000 and need a server configured for each of them, so
scripts/sdk-suites runs them (each from its own directory, its own rootdir), and
tests/e2e/test_sdk_suites.py runs that script.
"""

collect_ignore_glob = ["*"]
