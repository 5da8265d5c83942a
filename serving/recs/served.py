"""Recording the recommendation responses served, off the request path.

`ServedRecorder.record` keeps the response in a bounded in-process buffer (a lock and a deque
append: no I/O, never blocks on the stream). A daemon thread sends what the buffer holds to
the event stream every `flush_seconds`, and full batches as soon as `batch_size` records
wait, as `served` entries of at most `batch_size` records (`features.served_log` has the
record format; the stream consumer writes them to the served log). While the stream is
unreachable the records stay buffered, tried again every `flush_seconds` and sent once it
is back; when the buffer is full the oldest are dropped, counted (`dropped`) and logged by
the thread. A buffered response of 10 items takes about 1.7 kB: the default capacity of
20,000 holds 35 MB, a few minutes of traffic.
"""

import logging
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import Self

from features.served_log import served_record
from features.stream import SERVED, EventStream, StreamUnavailableError
from serving.recs.recommender import Recommendation

logger = logging.getLogger(__name__)

DROP_REPORT_SECONDS = 60.0
"""Dropped records are logged at most this often (and at shutdown)."""
Pending = tuple[uuid.UUID, float, str, Recommendation]
"""A response waiting to be sent: request id, epoch seconds, user id, recommendation."""


class ServedRecorder:
    """Buffers the responses served and sends them to `stream` from a daemon thread (the
    stream stays its opener's to close, after `close`)."""

    def __init__(self, stream: EventStream, capacity: int = 20_000,
                 flush_seconds: float = 0.5, batch_size: int = 500):
        self._stream = stream
        self._buffer: deque[Pending] = deque()
        self._capacity = capacity
        self._flush_seconds = flush_seconds
        self._batch_size = batch_size
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="served-recorder", daemon=True)
        self._stream_down = False
        self._reported_drops = 0
        self._reported_at = float("-inf")
        self.dropped = 0
        """Records dropped since start: the buffer was full, or a batch failed otherwise
        than by the stream being unreachable (a bug, logged)."""

    def start(self) -> Self:
        self._thread.start()
        return self

    def record(self, request_id: uuid.UUID, user_id: str,
               recommendation: Recommendation) -> None:
        """Buffer one response (the oldest buffered one is dropped when the buffer is full)."""
        with self._lock:
            if len(self._buffer) >= self._capacity:
                self._buffer.popleft()
                self.dropped += 1
            self._buffer.append((request_id, time.time(), user_id, recommendation))
            due = len(self._buffer) >= self._batch_size
        if due and not self._wake.is_set():
            self._wake.set()

    def pending(self) -> int:
        """Records buffered, not yet sent."""
        return len(self._buffer)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread after it sent what is buffered (one try)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("the served recorder did not stop within %.0f s", timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._stream_down:  # retry at the interval only, whatever the buffer holds
                woken = self._stop.wait(self._flush_seconds)
            else:
                woken = self._wake.wait(self._flush_seconds)
            self._wake.clear()
            self._flush(partial=not woken)
        self._flush(partial=True)
        left = self.pending()
        if left:
            logger.warning("%d recommendation responses were not recorded: the stream is "
                           "unavailable at shutdown", left)

    def _take(self, partial: bool) -> list[Pending]:
        with self._lock:
            if len(self._buffer) < self._batch_size and not partial:
                return []
            count = min(self._batch_size, len(self._buffer))
            return [self._buffer.popleft() for _ in range(count)]

    def _put_back(self, batch: list[Pending]) -> None:
        """Return an unsent batch to the front; the oldest go if the rest does not fit."""
        with self._lock:
            room = max(self._capacity - len(self._buffer), 0)
            kept = batch[len(batch) - room:] if room < len(batch) else batch
            self.dropped += len(batch) - len(kept)
            self._buffer.extendleft(reversed(kept))

    def _flush(self, partial: bool) -> None:
        """Send the buffer in entries of `batch_size`, and what is left as one last entry
        when `partial` (records arriving meanwhile wait for the next flush); stop at the
        first failure."""
        while batch := self._take(partial):
            try:
                self._stream.append(SERVED, [_as_record(pending) for pending in batch])
            except StreamUnavailableError as error:
                self._put_back(batch)
                if not self._stream_down:
                    logger.warning("the event stream is unavailable; buffering recommendation "
                                   "responses (%d held): %s", self.pending(), error)
                    self._stream_down = True
                break
            except Exception:
                with self._lock:
                    self.dropped += len(batch)
                logger.exception("recording %d recommendation responses failed; dropped",
                                 len(batch))
            else:
                if self._stream_down:
                    logger.info("the event stream is back; sending buffered responses")
                    self._stream_down = False
            if len(batch) < self._batch_size:
                break
        now = time.monotonic()
        if self.dropped > self._reported_drops and (
                now - self._reported_at >= DROP_REPORT_SECONDS or self._stop.is_set()):
            logger.warning("%d recommendation responses dropped (%d since start; the buffer "
                           "holds %d while the stream is unavailable)",
                           self.dropped - self._reported_drops, self.dropped, self._capacity)
            self._reported_drops, self._reported_at = self.dropped, now


def _as_record(pending: Pending) -> dict:
    request_id, ts, user_id, recommendation = pending
    return served_record(str(request_id), datetime.fromtimestamp(ts, UTC), user_id,
                         recommendation.model_version, recommendation.fallback,
                         ((item.item_id, item.score, item.source)
                          for item in recommendation.items))
