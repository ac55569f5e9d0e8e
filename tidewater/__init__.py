"""Shared machinery for tidewater: project paths, the warehouse profile, the
embedded PostgreSQL server, connections and run records.

Loaders, roles and tasks all import from here so that connections and the
embedded server are configured in exactly one place.
"""

from tidewater.exceptions import ConfigError, TidewaterError

__all__ = ["ConfigError", "TidewaterError"]
