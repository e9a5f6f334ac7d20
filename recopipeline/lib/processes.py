"""Tasks run each in a new process: forked from a server that has imported the named modules once, one task per
process (its memory goes back to the system when it ends), at most a given number at a time."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class TasksFailed(RuntimeError):
    """Some tasks raised; the others ran to their end. `failures` holds (index of the item, its exception)."""

    def __init__(self, failures: list[tuple[int, BaseException]]):
        super().__init__("; ".join(f"task {index}: {type(error).__name__}: {error}" for index, error in failures))
        self.failures = failures


def each_in_a_process(
    task: Callable[[Item], Result], items: Sequence[Item], processes: int, preload: Sequence[str]
) -> list[Result]:
    """`task(item)` for every item, each in a new process forked from a server that has imported `preload`, at
    most `processes` at a time; the results in the order of `items`. Raises TasksFailed, in the order of the
    items, once every task has ended, if any raised. `task` must be a module-level function."""
    if not items:
        return []
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    results: dict[int, Result] = {}
    failures: list[tuple[int, BaseException]] = []
    with ProcessPoolExecutor(max_workers=max(1, min(processes, len(items))), mp_context=context,
                             max_tasks_per_child=1) as pool:
        futures = {pool.submit(task, item): index for index, item in enumerate(items)}
        for future in as_completed(futures):
            try:
                results[futures[future]] = future.result()
            except Exception as error:  # noqa: BLE001 - reported with the item it belongs to, after the others
                failures.append((futures[future], error))
    if failures:
        raise TasksFailed(sorted(failures, key=lambda failure: failure[0]))
    return [results[index] for index in range(len(items))]
