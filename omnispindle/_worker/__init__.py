"""The worker's run: claiming, executing, storing outcomes, keeping leases, stopping."""
