"""Events: the outbox, the sinks it feeds (webhooks, Kafka) and the feed."""
