"""The source-engine registry: a kind names one engine class; unknown kinds are
one-line errors listing the known ones; each engine says what the skeleton may rely
on."""

from __future__ import annotations

import pytest

from loaders.config import SourceConfig
from loaders.exceptions import DeclarationError
from loaders.results import LoadOptions
from loaders.sources import ENGINES, engine_for
from loaders.sources.base import SourceEngine
from loaders.sources.redshift import MissingStaging


@pytest.mark.parametrize("kind", sorted(ENGINES))
def test_every_kind_names_an_engine_that_serves_it(kind: str) -> None:
    engine = engine_for(kind)
    assert issubclass(engine, SourceEngine)
    assert engine.kind == kind


def test_an_unknown_kind_lists_the_known_ones() -> None:
    with pytest.raises(DeclarationError, match="mysql, postgres, redshift"):
        engine_for("oracle")


def test_what_differs_between_engines_is_declared_not_tested_for() -> None:
    postgres, redshift, mysql = engine_for("postgres"), engine_for("redshift"), engine_for("mysql")
    assert (postgres.copy_format, postgres.checksum, postgres.sees_open_transactions) == (
        "text",
        "hashtext",
        True,
    )
    # UNLOAD writes CSV; Redshift shows no transaction starts and has no hashtext
    assert (redshift.copy_format, redshift.sees_open_transactions, redshift.detects_deletes) == (
        "csv",
        False,
        False,
    )
    assert (mysql.copy_format, mysql.checksum, mysql.sees_open_transactions) == (
        "text",
        "md5",
        True,
    )


def test_a_redshift_source_without_s3_staging_says_what_to_export_before_connecting() -> None:
    source = SourceConfig(
        name="legacy", raw_schema="raw_legacy", source_schema="sales", dsn_env="X", kind="redshift"
    )

    def never() -> None:
        raise AssertionError("connected before checking the staging settings")

    with pytest.raises(MissingStaging, match="TIDEWATER_S3_STAGING"):
        engine_for("redshift")(source, never, options=LoadOptions())
