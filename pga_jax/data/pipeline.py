"""Deterministic, resumable batches over an in-memory uint8 image array.

The global batch of step t is a pure function of (seed, t):
  steps_per_epoch = N // global_batch_size (the remainder is dropped),
  epoch = t // steps_per_epoch,
  perm = numpy.random.default_rng([seed, epoch]).permutation(N),
  rows = perm[(t % steps_per_epoch) * B : (t % steps_per_epoch + 1) * B].
Process p of P takes the contiguous slice p of those rows, so processes read
disjoint data and together form exactly the single-process global batch, and
resuming at step t reproduces an uninterrupted run.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator, Optional, Tuple

import numpy as np


def _check_positive_int(name: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
    raise ValueError(f'{name} must be a positive integer, got {value!r}')
  return int(value)


def _check_non_negative_int(name: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
    raise ValueError(f'{name} must be a non-negative integer, got {value!r}')
  return int(value)


def scale_images(images: np.ndarray) -> np.ndarray:
  """uint8 pixels -> float32 in [-1, 1]: x / 127.5 - 1 (the reference's scaling)."""
  return np.asarray(images).astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def to_uint8(images: np.ndarray) -> np.ndarray:
  """[-1, 1] floats -> uint8 pixels, rounded and clipped (the inverse of `scale_images`)."""
  return np.clip(np.round((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)


class BatchSource:
  """Batches of a uint8 (N, S, S, C) array, float32 in [-1, 1], by step number."""

  def __init__(
    self,
    images: np.ndarray,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
  ):
    """Validates the arguments.

    Raises:
      ValueError: images not uint8 (N, S, S, C); global_batch_size not
        divisible by process_count or larger than N; process_index out of
        range; negative seed.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
      raise ValueError(
        f'images must be a uint8 array (N, S, S, C), got {images.dtype} of shape {images.shape}'
      )
    self._global_batch_size = _check_positive_int('global_batch_size', global_batch_size)
    self._process_count = _check_positive_int('process_count', process_count)
    self._process_index = _check_non_negative_int('process_index', process_index)
    self._seed = _check_non_negative_int('seed', seed)
    if self._process_index >= self._process_count:
      raise ValueError(
        f'process_index ({process_index}) must be smaller than process_count ({process_count})'
      )
    if self._global_batch_size % self._process_count:
      raise ValueError(
        f'global_batch_size ({global_batch_size}) must be divisible by '
        f'process_count ({process_count})'
      )
    if len(images) < self._global_batch_size:
      raise ValueError(
        f'global_batch_size ({global_batch_size}) is larger than the number '
        f'of images ({len(images)}); lower global_batch_size or use more data'
      )
    self._images = images
    # (epoch, permutation) of the last epoch used; replaced as a whole, so a
    # prefetch thread and the caller can share it without a lock.
    self._permutation_cache: Tuple[int, Optional[np.ndarray]] = (-1, None)

  @property
  def num_examples(self) -> int:
    return len(self._images)

  @property
  def steps_per_epoch(self) -> int:
    """Full global batches per epoch (the remainder of each epoch is dropped)."""
    return self.num_examples // self._global_batch_size

  @property
  def local_batch_size(self) -> int:
    """Rows per process: global_batch_size // process_count."""
    return self._global_batch_size // self._process_count

  def epoch_permutation(self, epoch: int) -> np.ndarray:
    """The order of the N examples in `epoch`: a permutation seeded by (seed, epoch)."""
    epoch = _check_non_negative_int('epoch', epoch)
    cached_epoch, permutation = self._permutation_cache
    if cached_epoch != epoch:
      rng = np.random.default_rng([self._seed, epoch])
      permutation = rng.permutation(self.num_examples)
      self._permutation_cache = (epoch, permutation)
    return permutation

  def global_indices(self, step: int) -> np.ndarray:
    """Indices (into images) of the global batch of `step`."""
    step = _check_non_negative_int('step', step)
    epoch, position = divmod(step, self.steps_per_epoch)
    start = position * self._global_batch_size
    return self.epoch_permutation(epoch)[start : start + self._global_batch_size]

  def local_indices(self, step: int) -> np.ndarray:
    """This process's contiguous slice of `global_indices(step)`."""
    start = self._process_index * self.local_batch_size
    return self.global_indices(step)[start : start + self.local_batch_size]

  def batch_at(self, step: int) -> np.ndarray:
    """float32 (global_batch_size // process_count, S, S, C) in [-1, 1]."""
    return scale_images(self._images[self.local_indices(step)])

  def iterate(
    self, start_step: int = 0, num_steps: Optional[int] = None, prefetch: int = 2
  ) -> Iterator[Tuple[int, np.ndarray]]:
    """Yields (step, batch_at(step)) from start_step on, prefetched by a thread.

    Args:
      start_step: first step (resume a run by passing its next step).
      num_steps: how many batches; None for an endless stream.
      prefetch: batches prepared ahead of the consumer.

    Closing the iterator (or leaving a for loop over it) stops the thread.
    Errors in the thread are raised in the consumer.
    """
    start_step = _check_non_negative_int('start_step', start_step)
    if num_steps is not None:
      num_steps = _check_non_negative_int('num_steps', num_steps)
    prefetch = _check_positive_int('prefetch', prefetch)
    return _PrefetchIterator(self, start_step, num_steps, prefetch)


_END = object()  # marks the end of a finite stream in the queue


def _put_unless_stopped(q: queue.Queue, stop: threading.Event, item) -> bool:
  """Puts `item` in `q`, waiting while it is full; False if stopped first."""
  while not stop.is_set():
    try:
      q.put(item, timeout=0.1)
      return True
    except queue.Full:
      continue
  return False


def _produce(
  source: BatchSource,
  start_step: int,
  num_steps: Optional[int],
  q: queue.Queue,
  stop: threading.Event,
) -> None:
  """Thread body: puts (step, batch) items, then _END, or the error raised."""
  step = start_step
  try:
    while num_steps is None or step < start_step + num_steps:
      if not _put_unless_stopped(q, stop, (step, source.batch_at(step))):
        return
      step += 1
    _put_unless_stopped(q, stop, _END)
  except BaseException as e:  # pylint: disable=broad-except
    _put_unless_stopped(q, stop, e)


class _PrefetchIterator:
  """Iterator over (step, batch) filled by a daemon thread through a queue.

  The thread holds no reference to the iterator, so an iterator dropped
  without `close()` is garbage-collected and its thread then stops too.
  """

  def __init__(self, source: BatchSource, start_step: int, num_steps: Optional[int], prefetch: int):
    self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
    self._stop = threading.Event()
    self._done = False
    self._thread = threading.Thread(
      target=_produce,
      args=(source, start_step, num_steps, self._queue, self._stop),
      name='BatchSource-prefetch',
      daemon=True,
    )
    self._thread.start()

  def __iter__(self) -> '_PrefetchIterator':
    return self

  def __next__(self) -> Tuple[int, np.ndarray]:
    if self._done:
      raise StopIteration
    item = self._queue.get()
    if item is _END:
      self.close()
      raise StopIteration
    if isinstance(item, BaseException):
      self.close()
      raise item
    return item

  def close(self) -> None:
    """Stops the prefetch thread and drops the batches it had prepared."""
    self._done = True
    self._stop.set()
    self._thread.join()
    while not self._queue.empty():
      self._queue.get_nowait()

  def __enter__(self) -> '_PrefetchIterator':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def __del__(self):
    self._stop.set()
