"""Wall time and peak resident memory of a training job's stages, for MLflow and progress."""

import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psutil

SAMPLE_SECONDS = 0.02


def _peak_so_far_mb() -> float:
    """The process's peak resident memory since it started (what `time -v` reports)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes there, KiB here


class StageTimer:
    """Times stages by name: a name met again (one stage per cutoff) adds its seconds and
    keeps the highest peak. A stage's peak is the resident memory sampled every 20 ms while
    it runs, or the process's new peak when the stage raised it (exact). `on_stage` is
    called after each stage (a progress bar's step)."""

    def __init__(self, on_stage: Callable[[], None] = lambda: None):
        self.seconds: dict[str, float] = {}
        self.peak_mb: dict[str, float] = {}
        self.on_stage = on_stage

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        process = psutil.Process()
        sampled = [process.memory_info().rss]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(SAMPLE_SECONDS):
                sampled.append(process.memory_info().rss)

        sampler = threading.Thread(target=sample, daemon=True)
        before = _peak_so_far_mb()
        start = time.perf_counter()
        sampler.start()
        try:
            yield
        finally:
            done.set()
            sampler.join()
            seconds = time.perf_counter() - start
            peak = max(sampled) / 2**20
            after = _peak_so_far_mb()
            if after > before:
                peak = max(peak, after)
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds
            self.peak_mb[name] = max(self.peak_mb.get(name, 0.0), peak)
        self.on_stage()

    def metrics(self) -> dict[str, float]:
        """`stage_<name>_seconds` and `stage_<name>_peak_rss_mb` of every stage."""
        return {**{f"stage_{name}_seconds": s for name, s in self.seconds.items()},
                **{f"stage_{name}_peak_rss_mb": mb for name, mb in self.peak_mb.items()}}
