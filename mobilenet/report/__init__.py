"""The report stage: build/report.md and its charts, rendered from result files alone."""
