"""What the tests share: helpers, the administration helpers, the private clusters, the HTTP server and
the metrics exporter under test. Imported as `support.<module>`; tests/ is on sys.path (its conftest.py)."""
