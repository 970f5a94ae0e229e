"""Dynamic batching: requests for one model wait in a bounded queue; one worker thread per
model takes the first, gathers more of the same shape for at most `max_delay` seconds or until
`max_batch` rows, runs them as one call, and splits the outputs back by rows.

One thread per model because the runtime's GPU state (current stream, cuBLAS handle, captured
graphs) is per thread and stream, and a model runs one batch at a time anyway. A full queue
refuses at once (Overloaded: the server answers 503) instead of growing without bound. A
request that fails in a batch with the library's own error (an input the check let through)
is rerun alone, so only that request fails and the others still get their answers.
"""
import collections
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from ..errors import CupyPruneError
from .buckets import bucket_for
from .staging import fresh

log = logging.getLogger(__name__)
_IDLE_POLL_S = 0.1          # how often an idle worker looks whether it should stop


class Overloaded(Exception):
    """The model's queue is full: try again later (503 with Retry-After)."""


class Stopped(Exception):
    """The batcher is draining for shutdown and takes no new requests (503)."""


@dataclass
class Job:
    inputs: dict                     # name -> (rows, ...) NumPy array
    rows: int
    key: tuple                       # inputs' names, trailing shapes and dtypes: what may batch
    future: Future = field(default_factory=Future)


def batch_key(inputs):
    return tuple((k, v.shape[1:], v.dtype.str) for k, v in inputs.items())


def assemble(jobs, size, staging=fresh):
    """The jobs' rows, in order, as one (size, ...) array per input, written into the arrays
    `staging(name, shape, dtype)` gives; rows past theirs repeat the last row (always a valid
    input row). A lone job of the right size is passed as it is."""
    if len(jobs) == 1 and jobs[0].rows == size:
        return jobs[0].inputs
    batch = {}
    for name, first in jobs[0].inputs.items():
        out = staging(name, (size, *first.shape[1:]), first.dtype)     # (size, ...)
        start = 0
        for job in jobs:
            out[start:start + job.rows] = job.inputs[name]
            start += job.rows
        out[start:] = out[start - 1]
        batch[name] = out
    return batch


class DynamicBatcher:
    def __init__(self, name, run, max_batch, max_delay_s, max_queue, pad_to_buckets=False,
                 metrics=None, staging=fresh):
        """run: inputs (name -> (B, ...) array) -> outputs (name -> (B, ...) array);
        staging(name, shape, dtype) -> the array a batch's input is gathered in (staging.py)."""
        self.name, self._run, self._staging = name, run, staging
        self.max_batch, self.max_delay_s = max_batch, max_delay_s
        self.pad_to_buckets = pad_to_buckets
        self._queue = queue.Queue(maxsize=max_queue)
        self._held = collections.deque()     # a job taken that did not fit the last batch
        self._stopping = threading.Event()
        self._metrics = metrics
        self._thread = threading.Thread(target=self._loop, name=f"cupyprune-batcher-{name}",
                                        daemon=True)

    # -- the caller's side ------------------------------------------------------------------
    def start(self):
        self._thread.start()

    def submit(self, inputs, rows):
        """Queue one request's checked inputs -> a Future of its outputs. Raises Overloaded
        when the queue is full, Stopped while draining; never blocks."""
        if self._stopping.is_set():
            raise Stopped(f"model {self.name!r} is shutting down")
        job = Job(inputs, rows, batch_key(inputs))
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Overloaded(f"model {self.name!r}: {self._queue.maxsize} requests are queued "
                             f"already") from None
        self._report_depth()
        return job.future

    def depth(self):
        return self._queue.qsize() + len(self._held)

    def stop(self, timeout=None):
        """Take no new requests, answer every queued one, then end the worker thread."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the worker thread ------------------------------------------------------------------
    def _report_depth(self):
        if self._metrics is not None:
            self._metrics.queue_depth.labels(self.name).set(self.depth())

    def _take(self, timeout):
        """The next live job (held first), or None after `timeout` seconds (None: no wait)."""
        if self._held:
            return self._held.popleft()                      # marked running already
        while True:
            try:
                job = self._queue.get(timeout=timeout) if timeout else self._queue.get_nowait()
            except queue.Empty:
                return None
            if job.future.set_running_or_notify_cancel():    # False: its client went away
                return job

    def _gather(self, first):
        """The jobs to run with `first`: same key, at most max_batch rows, until the delay."""
        jobs, rows = [first], first.rows
        deadline = time.monotonic() + self.max_delay_s
        while rows < self.max_batch:
            job = self._take(max(0.0, deadline - time.monotonic()))
            if job is None:
                break
            if job.key != first.key or rows + job.rows > self.max_batch:
                self._held.append(job)                       # first of the next batch
                break
            jobs.append(job)
            rows += job.rows
        return jobs

    def _loop(self):
        while True:
            first = self._take(_IDLE_POLL_S)
            if first is None:
                if self._stopping.is_set() and self.depth() == 0:
                    return
                continue
            jobs = self._gather(first)
            self._report_depth()
            self._run_jobs(jobs)

    def _run_jobs(self, jobs):
        try:
            self._run_batch(jobs)
        except CupyPruneError as e:
            if len(jobs) == 1:
                jobs[0].future.set_exception(e)
                return
            for job in jobs:                       # find the request at fault: each alone
                self._run_jobs_alone(job)
        except Exception as e:                     # a runtime failure: every request of it 500
            log.exception("model %r: a batch of %d requests failed", self.name, len(jobs))
            for job in jobs:
                job.future.set_exception(e)

    def _run_jobs_alone(self, job):
        try:
            self._run_batch([job])
        except Exception as e:
            job.future.set_exception(e)

    def _run_batch(self, jobs):
        """Gather the jobs' rows (padded to a bucket), run, split the outputs back."""
        rows = sum(job.rows for job in jobs)
        size = bucket_for(rows, self.max_batch) if self.pad_to_buckets else rows
        outputs = self._run(assemble(jobs, size, self._staging))     # (size, ...) each
        if self._metrics is not None:
            self._metrics.batch_size.labels(self.name).observe(rows)
        start = 0
        for job in jobs:
            job.future.set_result({k: v[start:start + job.rows] for k, v in outputs.items()})
            start += job.rows
