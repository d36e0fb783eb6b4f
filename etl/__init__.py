"""openphone-summary-sync: keep a SQL database in step with OpenPhone call summaries."""

__version__ = "0.1.0"
