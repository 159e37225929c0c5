"""Pure decisions: route matching, destination choice, load balancing (with consistent hashing
and locality priorities), retries, outlier ejection, connection-pool limits and retry budgets.

Nothing in this package does I/O or reads the clock or the global random source: callers pass
`now` (seconds, monotonic) and an `random.Random`-like `rng`. Tests are tables.
"""
