"""Observation: the plugin seams (events, middleware, tracer, metrics) and the optional
integrations (OpenTelemetry, Prometheus), each imported only when asked for (private)."""
