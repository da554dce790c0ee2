"""The package version (kept in pyproject.toml too)."""

__version__ = "0.1.0"
