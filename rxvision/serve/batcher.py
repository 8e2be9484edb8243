"""Micro-batching: concurrent requests share one forward pass.

Each request submits a *job*: its preprocessed images (n, 3, H, W), n = 1 for one photo,
2 for a front/back pair, up to ``max_batch`` for a batch request. One worker task takes the
first waiting job, then keeps adding jobs until the batch holds ``max_batch`` images or
``max_wait_ms`` have passed since it took the first, and runs ONE forward pass for the group
on a dedicated thread, so the event loop keeps accepting requests meanwhile. A job is never
split across passes; a job that would overflow the batch waits for the next one.

While a pass runs, new requests queue up, so under load batches fill by themselves. The
wait for company therefore applies only when the model was idle: if jobs are already
waiting when a pass ends, the next pass takes them all (up to ``max_batch``) and starts at
once, so the model never idles while work is queued. The queue is bounded:
when ``queue_size`` jobs are waiting, :meth:`MicroBatcher.submit` raises
:class:`QueueFullError` at once (the app answers 503 + Retry-After) instead of letting
memory and latency grow without bound.

The forward thread is the only thread that touches the model: :meth:`run_exclusive` runs
other model work (explanations register hooks and run backward) on the same thread, so it
can never interleave with a batched pass.

Example:
    >>> batcher = MicroBatcher(identifier.forward, max_batch=16, max_wait_ms=5)
    >>> await batcher.start()
    >>> out = await batcher.submit(x)   # x (n, 3, H, W) -> out.outputs[0]: logits (n, C)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from .metrics import ServeMetrics

T = TypeVar("T")
Outputs = tuple[np.ndarray | None, ...]  # per-row arrays (B, ...); None: not available
ForwardFn = Callable[[np.ndarray], Outputs]


class QueueFullError(RuntimeError):
    """Too many requests are waiting for the model; retry later (HTTP 503)."""


class BatcherClosedError(RuntimeError):
    """The batcher is not running (starting up or shutting down)."""


@dataclass
class BatchResult:
    """One job's rows of a batched forward pass, and how that pass went."""

    outputs: Outputs  # this job's rows of each output of ``forward``, e.g. logits (n, C)
    batch_size: int  # images in the forward pass this job rode in
    batch_jobs: int  # jobs (requests) in that pass
    queue_ms: float  # submit -> forward start
    forward_ms: float  # the whole batched pass


@dataclass
class _Job:
    x: np.ndarray  # (n, 3, H, W)
    future: asyncio.Future[BatchResult]
    submitted: float  # time.perf_counter()


class MicroBatcher:
    """Groups submitted jobs into forward passes of at most ``max_batch`` images.

    Args:
        forward: batch (B, 3, H, W) -> a tuple of per-row outputs, each (B, ...) or None
            (e.g. logits and embeddings); called on the batcher's own thread, one call at a
            time.
        max_batch: images per forward pass (a larger single job still runs, alone).
        max_wait_ms: how long the first job of a batch waits for company.
        queue_size: jobs allowed to wait; beyond that :meth:`submit` raises QueueFullError.
        metrics: where batch sizes, queue depth and rejections are recorded.
    """

    def __init__(self, forward: ForwardFn, *, max_batch: int = 16, max_wait_ms: float = 5.0,
                 queue_size: int = 256, metrics: ServeMetrics | None = None):
        if max_batch < 1 or queue_size < 1 or max_wait_ms < 0:
            raise ValueError("need max_batch >= 1, queue_size >= 1 and max_wait_ms >= 0")
        self.forward = forward
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self.metrics = metrics or ServeMetrics()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="rxvision-model")
        self._queue: asyncio.Queue[_Job] | None = None
        self._carry: _Job | None = None  # taken from the queue, did not fit the last batch
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the worker task on the running event loop."""
        if self._task is not None:
            raise RuntimeError("batcher already started")
        self._queue = asyncio.Queue(self.queue_size)
        self._task = asyncio.create_task(self._worker(), name="rxvision-batcher")

    async def stop(self) -> None:
        """Stop the worker, fail jobs still waiting, and wait for a running pass to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        waiting = [self._carry] if self._carry else []
        self._carry = None
        while self._queue is not None and not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        for job in waiting:
            if not job.future.done():
                job.future.set_exception(BatcherClosedError("the service is shutting down"))
        self.metrics.queue_depth.set(0)
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def depth(self) -> int:
        """Jobs waiting for a forward pass."""
        return (self._queue.qsize() if self._queue else 0) + (self._carry is not None)

    # --- use --------------------------------------------------------------------------------
    async def submit(self, x: np.ndarray) -> BatchResult:
        """Queue preprocessed images (n, 3, H, W); wait for their rows of a batched pass.

        Raises:
            QueueFullError: ``queue_size`` jobs are already waiting.
            BatcherClosedError: the batcher is not running.
        """
        if not self.running or self._queue is None:
            raise BatcherClosedError("the model is not ready")
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Job(x, future, time.perf_counter()))
        except asyncio.QueueFull:
            self.metrics.rejected.inc()
            raise QueueFullError(f"{self.queue_size} requests are already waiting") from None
        self.metrics.queue_depth.set(self.depth)
        return await future

    async def run_exclusive(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the model thread, never at the same time as a forward pass."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    # --- worker -----------------------------------------------------------------------------
    def _take_waiting(self) -> _Job | None:
        assert self._queue is not None
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        with contextlib.suppress(asyncio.QueueEmpty):
            return self._queue.get_nowait()
        return None

    async def _next_job(self, timeout: float | None) -> _Job | None:
        job = self._take_waiting()
        if job is not None or (timeout is not None and timeout <= 0):
            return job
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def _collect(self) -> list[_Job]:
        """The next group: at most max_batch images.

        ``max_wait_ms`` applies only when the model was idle (the first job found the queue
        empty). When jobs were already waiting as the last pass ended, the service is busy:
        the next pass takes every waiting job (up to max_batch) and starts at once, because
        waiting longer would leave the model idle while more requests queue up anyway.
        """
        first = self._take_waiting()
        busy = first is not None
        if first is None:
            first = await self._next_job(None)
        assert first is not None
        jobs, rows = [first], len(first.x)
        deadline = time.perf_counter() + (0.0 if busy else self.max_wait_s)
        while rows < self.max_batch:
            job = await self._next_job(deadline - time.perf_counter())
            if job is None:
                break
            if rows + len(job.x) > self.max_batch:
                self._carry = job  # first in line for the next pass
                break
            jobs.append(job)
            rows += len(job.x)
        return jobs

    def _run(self, xs: list[np.ndarray]) -> Outputs:
        """On the model thread: concatenate the jobs (a copy: keep it off the loop), forward."""
        return self.forward(xs[0] if len(xs) == 1 else np.concatenate(xs))

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect()
            self.metrics.queue_depth.set(self.depth)
            jobs = [j for j in jobs if not j.future.done()]  # their clients went away
            if not jobs:
                continue
            start = time.perf_counter()
            try:
                outputs = await loop.run_in_executor(self._executor, self._run,
                                                     [j.x for j in jobs])
                forward_s = time.perf_counter() - start
            except Exception as exc:  # the jobs fail, the worker lives on
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            rows = sum(len(j.x) for j in jobs)
            self.metrics.batch_size.observe(rows)
            self.metrics.batch_jobs.observe(len(jobs))
            self.metrics.forward_seconds.observe(forward_s)
            offset = 0
            for job in jobs:
                n = len(job.x)
                self.metrics.queue_wait.observe(max(0.0, start - job.submitted))
                result = BatchResult(
                    tuple(None if o is None else o[offset:offset + n] for o in outputs),
                    rows, len(jobs), (start - job.submitted) * 1e3, forward_s * 1e3)
                offset += n
                if not job.future.done():
                    job.future.set_result(result)
