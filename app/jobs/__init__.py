"""Durable background work: one mechanism every package uses (see queue.py and worker.py)."""
