"""What the tests and the benchmark share: real processes on loopback (servers, scorers,
Redis, a Redis Cluster), fresh topics and databases, the tiny models, toy transactions, drift
traffic, throwaway pipeline projects and the replay loop.

No pytest here: the benchmark imports these modules as they are. Fixtures and test-only
helpers stay in tests/helpers, which builds on this package."""
