"""The package version."""

__version__ = "0.1.0"
"""The installed version of aurora_swarm."""
