"""Loaders: copy declared source tables into ``raw_<source>`` schemas of the
warehouse, incrementally by high-water mark or in bulk, losslessly and
idempotently.

Public entry points: `load_sources` (read the declaration), `connector_for` and
`check_source` (connect to a source of any kind), `load_all` (one job for all
tables), `load_table` (one table, one transaction). Source databases are engines
(`loaders.sources`).
"""

from loaders.config import SourceConfig, TableConfig, load_sources
from loaders.exceptions import LoaderError, LoadRunFailed, SourceUnreachable
from loaders.pipeline import load_all, load_table, raise_on_failure
from loaders.results import ConnectFn, LoadOptions, TableResult
from loaders.sources import check_source, connector_for

__all__ = [
    "ConnectFn",
    "LoadOptions",
    "LoadRunFailed",
    "LoaderError",
    "SourceConfig",
    "SourceUnreachable",
    "TableConfig",
    "TableResult",
    "check_source",
    "connector_for",
    "load_all",
    "load_sources",
    "load_table",
    "raise_on_failure",
]
