"""Framework adapters; each imports its framework only inside its own module."""
