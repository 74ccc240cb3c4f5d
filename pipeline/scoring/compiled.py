"""Compiled scoring: the ranker's trees as native code (Treelite → TL2cgen) for shards big enough to pay for it.

scikit-learn's HistGradientBoosting walks its trees at ~8 µs per candidate single-threaded here (200 trees × 31
leaves); the same trees compiled to C by TL2cgen give the same probabilities (to float rounding) in about a third
of the time. Compiling costs tens of seconds per model, so a shard compiles only when it has at least
`shard.compile_ranker_min_users` users, and the library is cached on the node under the data root, keyed by the
model's content, so every later shard of the night (and every night of that model) loads it in milliseconds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class CompiledRanker:
    """`predict_proba` of the binary sklearn model it was compiled from: columns [1 - p, p]."""

    model: Any  # the fitted sklearn model: its feature order is the compiled code's
    library: Path
    _predictor: Any = field(default=None, init=False, repr=False)

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        import tl2cgen

        if self._predictor is None:
            self._predictor = tl2cgen.Predictor(str(self.library), nthread=1)  # one thread: one shard per core
        matrix = features[list(self.model.feature_names_in_)].to_numpy(dtype=np.float64)
        p = self._predictor.predict(tl2cgen.DMatrix(matrix)).reshape(len(matrix), -1)[:, -1]
        return np.column_stack([1.0 - p, p])

    def __getstate__(self) -> dict[str, Any]:
        """Pickles without the loaded library handle (a ctypes pointer); it is loaded again on first use."""
        return {**self.__dict__, "_predictor": None}

    def score(self, features: pd.DataFrame) -> np.ndarray:
        """P(played through) per row: the `Scorer` interface."""
        return self.predict_proba(features)[:, 1]


def cache_key(model: Any) -> str:
    """Content key of a compiled model: the pickled model, the compiler versions and the machine."""
    import tl2cgen
    import treelite

    digest = hashlib.sha256(pickle.dumps(model, protocol=5))
    digest.update(f"{treelite.__version__}/{tl2cgen.__version__}/{platform.machine()}".encode())
    return digest.hexdigest()[:20]


def compile_ranker(model: Any, cache: Path) -> CompiledRanker:
    """The model compiled to a shared library in `cache` (reused when already there; written atomically, so
    concurrent shards on one node at worst compile twice)."""
    import tl2cgen
    import treelite

    library = cache / f"ranker-{cache_key(model)}.so"
    if not library.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as scratch:
            built = Path(scratch) / library.name
            tl2cgen.export_lib(treelite.sklearn.import_model(model), toolchain="gcc", libpath=str(built),
                               params={"parallel_comp": 8}, nthread=os.cpu_count() or 1, verbose=False)
            shutil.move(built, library)
        log.info("compiled the ranker to %s", library)
    return CompiledRanker(model, library)
