"""Destinations: the receivers deliveries go to (a webhook origin, a RabbitMQ queue or exchange),
each with its limits, its circuit breaker and its signing secrets (table `destinations`)."""
