"""What the queue tells the outside: tracing spans and metric snapshots."""
