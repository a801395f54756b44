"""The rules every wing shares: defaults and ranges, argument checks, batches, cron.

Pure Python: nothing here does I/O or imports another wing.
"""
