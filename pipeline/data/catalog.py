"""The track catalog as production reads it: one Parquet file per data root, whoever wrote it.

A real deployment lands its catalog export at `Layout.catalog`; the synthetic world writes the same file. Nothing
here knows about listeners or their tastes.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from pipeline.core.paths import Layout


class CatalogMissing(FileNotFoundError):
    """The data root has no catalog yet."""


def read_catalog(layout: Layout, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The catalog (every column, or only `columns`), one row per track."""
    path = layout.catalog
    if not path.exists():
        raise CatalogMissing(f"{path}: no catalog in this data root (run `dailymix world` or land a catalog export)")
    return pd.read_parquet(path, columns=list(columns) if columns is not None else None)
