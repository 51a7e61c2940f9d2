"""Event sources: each turns what the kernel tells it into event records on one queue."""
