"""Loader for the real HetRec 2011 Last.fm 2K data set (artists as items, listening counts as plays).

The data set has no tracks, so artists play the role of tracks: the catalog has one row per artist, shaped
like a synthetic catalog, and the genre of an artist is the tag users assigned to it most often. This lets
the same retrieval and evaluation code run on real listening data. The files are read in place and never
copied into the repository (the licence is non-commercial).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import schema

ARTISTS_FILE = "artists.dat"  # UTF-8, LF
TAGS_FILE = "tags.dat"  # Latin-1, CRLF
PLAYS_FILE = "user_artists.dat"  # ASCII, CRLF
TAGGINGS_FILE = "user_taggedartists.dat"  # ASCII, CRLF

UNKNOWN = "unknown"


@dataclass(frozen=True)
class HetRec:
    """Catalog (artists as tracks) and plays (user_id, track_id, weight = listening count)."""

    catalog: pd.DataFrame  # schema.CATALOG_COLUMNS, sorted by track_id
    plays: pd.DataFrame  # user_id, track_id, weight (int64), sorted by (user_id, track_id)


def load_hetrec(path: str | Path) -> HetRec:
    """Read the HetRec Last.fm 2K directory at `path`; FileNotFoundError names the first missing file."""
    root = Path(path)
    artists = _read(root, ARTISTS_FILE, "utf-8", {"id": "int64", "name": "string"})
    tags = _read(root, TAGS_FILE, "latin-1", {"tagID": "int64", "tagValue": "string"})
    plays = _read(root, PLAYS_FILE, "ascii", {"userID": "int64", "artistID": "int64", "weight": "int64"})
    taggings = _read(root, TAGGINGS_FILE, "ascii", {"userID": "int64", "artistID": "int64", "tagID": "int64"})
    plays = _plays(plays)
    names = _names(artists, plays)
    catalog = _catalog(names, _top_tags(taggings, tags), plays)
    return HetRec(catalog=catalog, plays=plays)


def _read(root: Path, name: str, encoding: str, dtypes: dict[str, str]) -> pd.DataFrame:
    """Tab-separated, header row, no quoting (artist names contain bare quotes), nothing read as NA."""
    path = root / name
    if not path.is_file():
        raise FileNotFoundError(f"HetRec file missing: {path}")
    return pd.read_csv(
        path,
        sep="\t",
        encoding=encoding,
        quoting=csv.QUOTE_NONE,
        keep_default_na=False,
        usecols=list(dtypes),
        dtype=dtypes,
    )


def _plays(raw: pd.DataFrame) -> pd.DataFrame:
    plays = raw.rename(columns={"userID": schema.USER_ID, "artistID": schema.TRACK_ID, "weight": schema.WEIGHT})
    plays = plays[[schema.USER_ID, schema.TRACK_ID, schema.WEIGHT]].astype("int64")
    return plays.sort_values([schema.USER_ID, schema.TRACK_ID], kind="stable").reset_index(drop=True)


def _names(artists: pd.DataFrame, plays: pd.DataFrame) -> pd.Series:
    """Artist name by id: all of artists.dat plus a placeholder for played artists it lacks."""
    names = artists.drop_duplicates("id").set_index("id")["name"]
    missing = np.setdiff1d(plays[schema.TRACK_ID].unique(), names.index.to_numpy())
    extra = pd.Series([f"artist {i}" for i in missing.tolist()], index=missing, dtype="string")
    return pd.concat([names, extra]).sort_index()


def _top_tags(taggings: pd.DataFrame, tags: pd.DataFrame) -> pd.Series:
    """Tag value assigned most often to each artist; ties go to the lowest tagID, as the most common tag."""
    counts = taggings.groupby(["artistID", "tagID"]).size().rename("n").reset_index()
    counts = counts.sort_values(["artistID", "n", "tagID"], ascending=[True, False, True], kind="stable")
    top = counts.drop_duplicates("artistID").set_index("artistID")["tagID"]
    values = tags.drop_duplicates("tagID").set_index("tagID")["tagValue"]
    genre = top.map(values).astype("string")
    unnamed = genre.isna()  # a tagID absent from tags.dat keeps a readable placeholder
    genre[unnamed] = "tag " + top[unnamed].astype(str)
    return genre


def _catalog(names: pd.Series, top_tags: pd.Series, plays: pd.DataFrame) -> pd.DataFrame:
    ids = names.index.to_numpy().astype(np.int64)
    listened = plays.groupby(schema.TRACK_ID)[schema.WEIGHT].sum().reindex(ids, fill_value=0).to_numpy()
    total = listened.sum()
    n = len(ids)
    catalog = pd.DataFrame(
        {
            schema.TRACK_ID: ids,
            schema.TITLE: names.to_numpy(),
            schema.ARTIST_ID: ids,
            schema.ARTIST_NAME: names.to_numpy(),
            schema.GENRE: top_tags.reindex(ids).fillna(UNKNOWN).to_numpy(),
            schema.MOOD: np.full(n, UNKNOWN, dtype=object),
            schema.RELEASE_DATE: pd.Series(pd.NaT, index=range(n), dtype="datetime64[ns]"),
            schema.DURATION_MS: np.zeros(n, dtype=np.int64),
            schema.POPULARITY: listened / total if total > 0 else np.zeros(n),
        }
    )
    text = [schema.TITLE, schema.ARTIST_NAME, schema.GENRE, schema.MOOD]
    catalog[text] = catalog[text].astype("string")
    return catalog[list(schema.CATALOG_COLUMNS)]
