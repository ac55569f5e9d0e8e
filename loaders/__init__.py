"""Loaders: copy declared source tables into ``raw_<source>`` schemas of the
warehouse, incrementally by high-water mark or in bulk, losslessly and
idempotently.

Public entry points: `load_sources` (read the declaration), `load_all` (one job
for all tables), `load_table` (one table, one transaction).
"""

from loaders.config import SourceConfig, TableConfig, load_sources
from loaders.exceptions import LoaderError, LoadRunFailed
from loaders.pipeline import LoadOptions, TableResult, load_all, load_table, raise_on_failure

__all__ = [
    "LoadOptions",
    "LoadRunFailed",
    "LoaderError",
    "SourceConfig",
    "TableConfig",
    "TableResult",
    "load_all",
    "load_sources",
    "load_table",
    "raise_on_failure",
]
