"""The package version, in one place (hatch reads it from here; ``etl.__version__`` re-exports it)."""

__version__ = "0.1.0"
