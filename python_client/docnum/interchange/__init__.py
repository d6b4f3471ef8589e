"""What goes in and out as files: the legacy CSV importer, the audit export writer, results as JSON."""
