"""``omnispindle bench``: scenarios that measure the queue, alone and beside its peers."""
