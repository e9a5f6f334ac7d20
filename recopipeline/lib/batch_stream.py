"""An Arrow stream whose record batches are computed by worker threads while DuckDB reads it."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa


def work_ranges(work: np.ndarray, most_work: int, most_items: int) -> list[tuple[int, int]]:
    """Ranges [low, high) of consecutive items (customers, anchor products), each of at most `most_items` items
    and about `most_work` of their `work` (at least one item): batches of even work for the threads."""
    cumulative = np.concatenate([[0], np.cumsum(work)])
    ranges, low = [], 0
    while low < len(work):
        high = int(np.searchsorted(cumulative, cumulative[low] + most_work, side="right")) - 1
        high = min(max(high, low + 1), low + most_items, len(work))
        ranges.append((low, high))
        low = high
    return ranges


class BatchStream:
    """An Arrow stream (the PyCapsule interface) that computes its record batches anew for every read: `workers`
    threads compute the next batches (the compiled loops and numpy release the GIL) while the reader consumes them
    in order; a range that gives None adds no batch."""

    def __init__(
        self,
        schema: pa.Schema,
        compute: Callable[[int, int], pa.RecordBatch | None],
        ranges: list[tuple[int, int]],
        workers: int = 2,
    ):
        self.schema = schema
        self.compute = compute
        self.ranges = ranges
        self.workers = workers

    def __arrow_c_stream__(self, requested_schema=None):
        reader = pa.RecordBatchReader.from_batches(self.schema, self._batches())
        return reader.__arrow_c_stream__(requested_schema)

    def _batches(self) -> Iterator[pa.RecordBatch]:
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="batch-stream")
        pending: deque = deque()
        ranges = iter(self.ranges)
        try:
            while True:
                while len(pending) < 2 * self.workers and (batch := next(ranges, None)) is not None:
                    pending.append(pool.submit(self.compute, *batch))
                if not pending:
                    return
                batch = pending.popleft().result()
                if batch is not None:
                    yield batch
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True)
