"""The database seam: pools, the named statements, notifications, the embedded server.

Every other wing reaches Postgres through this one.
"""
