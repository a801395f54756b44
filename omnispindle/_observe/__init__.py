"""What the queue tells the outside: tracing spans, metric snapshots, the /metrics endpoint."""
