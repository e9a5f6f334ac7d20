"""An Arrow stream whose record batches are computed by worker threads while DuckDB reads it."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa


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
