"""HetRec loader: exact answers on a tiny HetRec-shaped directory, and the published counts on the real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core import schema
from pipeline.core.config import PROJECT_ROOT
from pipeline.evaluation.hetrec import load_hetrec

REAL_PATH = PROJECT_ROOT.parent / "shared" / "data" / "hetrec2011-lastfm-2k"


def _write(path: Path, rows: list[str], encoding: str, newline: str) -> None:
    path.write_bytes(newline.join([*rows, ""]).encode(encoding))


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """Encodings and line endings as in the real files; quotes and an "NA" name that naive parsing would mangle."""
    _write(
        tmp_path / "artists.dat",
        [
            "id\tname\turl\tpictureURL",
            "1\tBeyoncé\thttp://x/1\thttp://p/1.jpg",
            '2\t"Weird Al" Yankovic\thttp://x/2\thttp://p/2.jpg',
            "3\tNA\thttp://x/3\t",
            "4\tUntagged Band\thttp://x/4\thttp://p/4.jpg",
        ],
        "utf-8",
        "\n",
    )
    _write(tmp_path / "tags.dat", ["tagID\ttagValue", "1\trock", "2\tpop", "3\télectro", "5\tjazz"], "latin-1", "\r\n")
    _write(
        tmp_path / "user_artists.dat",
        ["userID\tartistID\tweight", "11\t7\t20", "11\t1\t40", "10\t2\t10", "10\t1\t30"],
        "ascii",
        "\r\n",
    )
    _write(
        tmp_path / "user_taggedartists.dat",
        [
            "userID\tartistID\ttagID\tday\tmonth\tyear",
            "10\t1\t2\t1\t4\t2009",  # artist 1: pop twice, rock once -> pop
            "11\t1\t2\t1\t4\t2009",
            "10\t1\t1\t1\t4\t2009",
            "10\t2\t3\t1\t4\t2009",  # artist 2: électro once (listed first), rock once -> tie, lowest tagID: rock
            "11\t2\t1\t1\t4\t2009",
            "10\t3\t5\t1\t4\t2009",  # artist 3: électro twice, jazz once -> électro (Latin-1 decoded)
            "10\t3\t3\t1\t4\t2009",
            "11\t3\t3\t1\t4\t2009",
            "10\t99\t1\t1\t4\t2009",  # artist 99 is neither in artists.dat nor played: ignored
        ],
        "ascii",
        "\r\n",
    )
    return tmp_path


def test_tiny_catalog_exact(tiny: Path) -> None:
    catalog = load_hetrec(tiny).catalog
    names = ["Beyoncé", '"Weird Al" Yankovic', "NA", "Untagged Band", "artist 7"]
    expected = pd.DataFrame(
        {
            schema.TRACK_ID: np.array([1, 2, 3, 4, 7], dtype=np.int64),
            schema.TITLE: pd.array(names, dtype="string"),
            schema.ARTIST_ID: np.array([1, 2, 3, 4, 7], dtype=np.int64),
            schema.ARTIST_NAME: pd.array(names, dtype="string"),
            schema.GENRE: pd.array(["pop", "rock", "électro", "unknown", "unknown"], dtype="string"),
            schema.MOOD: pd.array(["unknown"] * 5, dtype="string"),
            schema.RELEASE_DATE: pd.Series([pd.NaT] * 5, dtype="datetime64[ns]"),
            schema.DURATION_MS: np.zeros(5, dtype=np.int64),
            schema.POPULARITY: [0.7, 0.1, 0.0, 0.0, 0.2],
        }
    )
    pd.testing.assert_frame_equal(catalog, expected)


def test_tiny_plays_exact(tiny: Path) -> None:
    expected = pd.DataFrame(
        {
            schema.USER_ID: np.array([10, 10, 11, 11], dtype=np.int64),
            schema.TRACK_ID: np.array([1, 2, 1, 7], dtype=np.int64),
            schema.WEIGHT: np.array([30, 10, 40, 20], dtype=np.int64),
        }
    )
    pd.testing.assert_frame_equal(load_hetrec(tiny).plays, expected)


@pytest.mark.parametrize("name", ["artists.dat", "tags.dat", "user_artists.dat", "user_taggedartists.dat"])
def test_missing_file_is_named(tiny: Path, name: str) -> None:
    (tiny / name).unlink()
    with pytest.raises(FileNotFoundError, match=name):
        load_hetrec(tiny)


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_PATH.is_dir(), reason=f"real HetRec data not found at {REAL_PATH}")
def test_real_data_counts() -> None:
    data = load_hetrec(REAL_PATH)
    assert data.plays[schema.USER_ID].nunique() == 1892
    assert len(data.plays) == 92834
    assert len(data.catalog) >= 17632
    assert data.catalog[schema.TRACK_ID].is_unique
    assert set(data.plays[schema.TRACK_ID]) <= set(data.catalog[schema.TRACK_ID])
    assert data.catalog[schema.POPULARITY].sum() == pytest.approx(1.0)
    britney = data.catalog.set_index(schema.TRACK_ID).loc[289]
    assert (britney[schema.ARTIST_NAME], britney[schema.GENRE]) == ("Britney Spears", "pop")
