"""Running docnum: the embedded server, the schema's state, the metrics exporter, the load test."""
