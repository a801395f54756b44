"""Background duties any process may run: the stale-lease sweeper, retention, periodic ticks."""
