"""Notifications: email through one notifier, sent as durable jobs."""
