"""Everything that leaves the process, and its resilience: the gateway clients (settings,
memberships, user details, events), cached single-flight lookups, the circuit breaker and
back-off, the event spool, the settings loop, and Redis for many workers and hosts."""
