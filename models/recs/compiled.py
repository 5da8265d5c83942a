"""The ranker's trees compiled to native code by lleaves (LLVM), for serving.

On a request's ~300 candidates a compiled forest scores several times faster than
LightGBM's own predict, with the same scores (`benchmarks/ranker_predict.py`). Compiling
takes seconds, so the object code is cached in a directory by a key of the model's text,
the compiler's versions and the host CPU it targets: workers and reloads of the same model
load it (about 10 ms). The first process that needs a key compiles it under an exclusive
lock on that key, in a child process (an LLVM crash or hang cannot take a worker down), and
the object file appears by an atomic rename: a reader sees a whole file or none.

Before it is used, a compiled forest is checked against the booster on probe rows built
from the model's own thresholds (with NaN, zeros and infinities): a setting lleaves does not
reproduce (`zero_as_missing`, say) fails the check instead of serving other scores.
"""

import fcntl
import hashlib
import importlib.metadata
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

PARITY_TOLERANCE = 1e-6
COMPILE_TIMEOUT_S = 600.0
PROBE_ROWS = 512
logger = logging.getLogger(__name__)
_COMPILE = "import sys, lleaves; lleaves.Model(model_file=sys.argv[1]).compile(cache=sys.argv[2])"


class CompileError(RuntimeError):
    """The booster could not be compiled, or its compiled scores are not LightGBM's."""


class CompiledForest:
    """A booster's trees as native code: `booster.predict`'s scores, on the calling thread."""

    def __init__(self, model: Any):
        self._model = model

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Scores of feature rows (float64, C-ordered: no copy)."""
        return self._model.predict(features, n_jobs=1)


def default_cache_dir() -> Path:
    """This user's compiled models, in the temporary directory."""
    return Path(tempfile.gettempdir()) / f"tailor-compiled-trees-{os.getuid()}"


def compile_booster(booster: lgb.Booster, cache_dir: Path) -> CompiledForest:
    """The booster compiled (or loaded from `cache_dir`) and checked against its own
    predict; `CompileError` when that fails."""
    import lleaves  # here: importing it takes about a second, and only serving needs it

    model_text = booster.model_to_string()
    key = cache_key(model_text)
    directory = _private(cache_dir)
    model_file, object_file = directory / f"{key}.txt", directory / f"{key}.o"
    if not object_file.exists():
        with _exclusive(directory / f"{key}.lock"):
            if not object_file.exists():
                start = time.perf_counter()
                _write_atomically(model_file, model_text.encode())
                _compile(model_file, object_file)
                logger.info("compiled %d trees in %.1f s: %s", booster.num_trees(),
                            time.perf_counter() - start, object_file)
    model = lleaves.Model(model_file=str(model_file))
    model.compile(cache=str(object_file))
    forest = CompiledForest(model)
    probe = probe_rows(booster)
    gap = float(np.max(np.abs(forest.predict(probe) - booster.predict(probe, num_threads=1))))
    if not gap <= PARITY_TOLERANCE:
        raise CompileError(f"the compiled trees score up to {gap:.3g} away from LightGBM's")
    return forest


def cache_key(model_text: str) -> str:
    """What the object code depends on: the model, lleaves and LLVM, the host CPU."""
    from llvmlite import binding

    target = (importlib.metadata.version("lleaves"), importlib.metadata.version("llvmlite"),
              binding.get_host_cpu_name(), binding.get_host_cpu_features().flatten())
    return hashlib.sha256("\n".join((*target, model_text)).encode()).hexdigest()


def probe_rows(booster: lgb.Booster, rows: int = PROBE_ROWS, seed: int = 0) -> np.ndarray:
    """Random rows of each feature's split thresholds and the doubles either side of them,
    a quarter of the cells NaN, zero or infinite: every branch of every missing-value rule."""
    pools: list[set[float]] = [set() for _ in range(booster.num_feature())]
    nodes = [tree["tree_structure"] for tree in booster.dump_model()["tree_info"]]
    while nodes:
        node = nodes.pop()
        if "split_feature" not in node:
            continue
        nodes += [node["left_child"], node["right_child"]]
        threshold = node["threshold"]  # categorical splits: "1||4||7"
        values = ([float(v) for v in threshold.split("||")] if isinstance(threshold, str)
                  else [threshold])
        for value in values:
            pools[node["split_feature"]].update(
                (value, np.nextafter(value, -np.inf), np.nextafter(value, np.inf)))
    rng = np.random.default_rng(seed)
    specials = np.array([np.nan, 0.0, -np.inf, np.inf])
    matrix = np.column_stack([rng.choice(sorted(pool or specials), rows) for pool in pools])
    special = rng.random(matrix.shape) < 0.25
    matrix[special] = rng.choice(specials, int(special.sum()))
    return matrix


def _private(directory: Path) -> Path:
    """`directory`, made if missing; refused when others can write to it (native code is
    loaded from it)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = directory.stat()
    if status.st_uid != os.getuid() or status.st_mode & 0o022:
        raise CompileError(f"{directory} is not private to this user")
    return directory


@contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_atomically(path: Path, content: bytes) -> None:
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        partial.write_bytes(content)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _compile(model_file: Path, object_file: Path) -> None:
    """Compile in a child process into a partial file, then rename it into place."""
    partial = object_file.with_name(f"{object_file.name}.{os.getpid()}.partial")
    try:
        done = subprocess.run([sys.executable, "-c", _COMPILE, str(model_file), str(partial)],
                              capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        if done.returncode != 0:
            raise CompileError(f"lleaves exited with {done.returncode}: "
                               f"{done.stderr.strip()[-2000:]}")
        os.replace(partial, object_file)
    except subprocess.TimeoutExpired as exc:
        raise CompileError(f"lleaves took more than {COMPILE_TIMEOUT_S:.0f} s") from exc
    finally:
        partial.unlink(missing_ok=True)
