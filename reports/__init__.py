"""The report generator: tables from the run store (Markdown, CSV; HTML pages later)."""
