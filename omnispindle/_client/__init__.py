"""The client side: submitting tasks, waiting for them, streaming, cancelling, retrying."""
