"""Retention: what is deleted when, swept by a periodic job (`retention.sweep`)."""
