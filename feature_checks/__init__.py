"""Data checks: Great Expectations suites (as code) and the runner that validates a batch
before anything downstream may use it."""
