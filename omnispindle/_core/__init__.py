"""The rules every wing shares: defaults, ranges and size limits, argument checks, batches, cron.

Pure Python: nothing here does I/O or imports another wing.
"""
