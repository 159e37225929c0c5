"""Pure decisions: route matching, destination choice, load balancing, retries, outlier ejection.

Nothing in this package does I/O or reads the clock or the global random source: callers pass
`now` (seconds, monotonic) and an `random.Random`-like `rng`. Tests are tables.
"""
