"""Test doubles the project supports for its own tests and its users' (see etl.testing.clock)."""
