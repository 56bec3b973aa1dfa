"""What a run reports as it trains: TensorBoard event files, log lines, progress.

The event files are written here, without TensorFlow (importing it costs
seconds at every start, and a run on an idx or folder dataset needs nothing
else from it). They hold what `tf.summary` writes, so TensorBoard, its
EventAccumulator and `tf.data.TFRecordDataset` read them alike:

* the file is a sequence of TFRecords (length, masked CRC32C of the length,
  the serialized `Event`, masked CRC32C of the data), named
  `events.out.tfevents.<time>.<host>.<pid>.<random>`, one per writer, so
  files of concurrent or resumed runs never overwrite each other;
* a scalar is a float32 tensor under the 'scalars' plugin; an image a
  [width, height, PNG] string tensor under the 'images' plugin;
  hyperparameters are the 'hparams' plugin's session-start summary.

For a gs:// run directory the events are written to a local temporary
directory and uploaded to the run directory whenever the writer is flushed,
and at most every `upload_every` seconds while it writes (an object cannot be
appended to; the growing file is uploaded whole).

A writer has the methods of clu's `MetricWriter` that training uses:
`write_scalars`, `write_images`, `write_hparams`, `flush`, `close`.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import tempfile
import threading
import time
import uuid
from typing import Any, Mapping, Optional, Sequence

from absl import logging
import google_crc32c
import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.util import tensor_util

from pga_jax import console, figures, storage


def _masked_crc(data: bytes) -> int:
  """TFRecord's checksum: CRC32C, rotated right by 15 bits, plus a constant."""
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _record(data: bytes) -> bytes:
  """One TFRecord holding `data`."""
  length = struct.pack('<Q', len(data))
  return (
    length + struct.pack('<I', _masked_crc(length)) + data + struct.pack('<I', _masked_crc(data))
  )


def event_file_name() -> str:
  """A new file's name: time, host and process, and a random part (writers of one process)."""
  stamp = f'{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}'
  return f'events.out.tfevents.{stamp}.{uuid.uuid4().hex[:12]}'


class Writer:
  """No-op writer: the interface, and the base of the writers below."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    del step, scalars

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """images: name -> (N, H, W, C) uint8, N images under one tag."""
    del step, images

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    del hparams

  def flush(self) -> None:
    pass

  def close(self) -> None:
    self.flush()


class EventFileWriter(Writer):
  """TensorBoard events in a new file of the local directory `logdir`."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    self.path = os.path.join(logdir, event_file_name())
    self._file = open(self.path, 'wb')  # pylint: disable=consider-using-with
    self._lock = threading.Lock()
    self._add(event_pb2.Event(wall_time=time.time(), file_version='brain.Event:2'))

  def _add(self, event: event_pb2.Event) -> None:
    """Appends the event and flushes: a run writes events every `log_every`
    steps, so TensorBoard (and a preempted run's file) has each one at once."""
    with self._lock:
      self._file.write(_record(event.SerializeToString()))
      self._file.flush()

  def _add_values(self, step: int, values: Sequence[summary_pb2.Summary.Value]) -> None:
    summary = summary_pb2.Summary(value=list(values))
    self._add(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

  def write_scalars(self, step, scalars):
    metadata = scalar_metadata.create_summary_metadata(display_name='', description='')
    self._add_values(
      step,
      [
        summary_pb2.Summary.Value(
          tag=tag, tensor=tensor_util.make_tensor_proto(np.float32(value)), metadata=metadata
        )
        for tag, value in scalars.items()
      ],
    )

  def write_images(self, step, images):
    metadata = image_metadata.create_summary_metadata(display_name='', description='')
    values = []
    for tag, batch in images.items():
      batch = np.asarray(batch)
      height, width = batch.shape[1:3]
      pngs = [figures.png_bytes(image) for image in batch]
      content = np.array([str(width).encode(), str(height).encode(), *pngs], dtype=object)
      values.append(
        summary_pb2.Summary.Value(
          tag=tag, tensor=tensor_util.make_tensor_proto(content), metadata=metadata
        )
      )
    self._add_values(step, values)

  def write_hparams(self, hparams):
    summary = hparams_summary.hparams_pb(dict(hparams))
    self._add(event_pb2.Event(wall_time=time.time(), summary=summary))

  def flush(self):
    with self._lock:
      if not self._file.closed:
        self._file.flush()

  def close(self):
    with self._lock:
      if not self._file.closed:
        self._file.close()


class LogLinesWriter(Writer):
  """Scalars as one log line per step, `[STEP] name=value, ...` (the console shows
  them); hyperparameters and images as detail (the log file)."""

  def write_scalars(self, step, scalars):
    values = ', '.join(
      f'{k}={v:.6g}' if isinstance(v, float) else f'{k}={v}' for k, v in sorted(scalars.items())
    )
    logging.info('[%d] %s', step, values)

  def write_images(self, step, images):
    console.detail_logger('events').info(
      '[%d] images: %s', step, {k: np.shape(v) for k, v in images.items()}
    )

  def write_hparams(self, hparams):
    console.detail_logger('events').info('[Hyperparameters] %s', dict(hparams))


class FanOut(Writer):
  """Every call goes to each writer, in order."""

  def __init__(self, writers: Sequence[Writer]):
    self._writers = list(writers)

  def write_scalars(self, step, scalars):
    for w in self._writers:
      w.write_scalars(step, scalars)

  def write_images(self, step, images):
    for w in self._writers:
      w.write_images(step, images)

  def write_hparams(self, hparams):
    for w in self._writers:
      w.write_hparams(hparams)

  def flush(self):
    for w in self._writers:
      w.flush()

  def close(self):
    for w in self._writers:
      w.close()


class UploadingSummaryWriter(EventFileWriter):
  """An event file in a local temporary directory, uploaded whole to `remote_dir`
  (gs://) on each flush, and after an event once `upload_every` seconds have
  passed since the last upload."""

  def __init__(self, remote_dir: str, upload_every: float = 60.0):
    self._local_dir = tempfile.mkdtemp(prefix='pga_events_')
    self._remote_path: Optional[str] = None  # set once the file exists
    self._upload_every = upload_every
    self._uploaded_size = -1
    self._last_upload = time.monotonic()
    super().__init__(self._local_dir)
    self._remote_path = storage.join(remote_dir, os.path.basename(self.path))

  def _add(self, event: event_pb2.Event) -> None:
    super()._add(event)
    if self._remote_path and time.monotonic() - self._last_upload >= self._upload_every:
      self.flush()

  def flush(self):
    super().flush()
    size = os.path.getsize(self.path)
    if size != self._uploaded_size:
      storage.upload(self.path, self._remote_path)
      self._uploaded_size = size
    self._last_upload = time.monotonic()

  def close(self):
    try:
      self.flush()
    finally:
      super().close()
      shutil.rmtree(self._local_dir, ignore_errors=True)


def create_writer(workdir: str, just_logging: bool = False, upload_every: float = 60.0) -> Writer:
  """Log lines, plus TensorBoard events in `workdir` (local or gs://) unless `just_logging`."""
  if just_logging:
    return LogLinesWriter()
  if storage.is_remote(workdir):
    events: Writer = UploadingSummaryWriter(workdir, upload_every)
  else:
    events = EventFileWriter(workdir)
  return FanOut([LogLinesWriter(), events])


def format_duration(seconds: float) -> str:
  """12345 -> '3h25m'; under an hour '25m45s'; under a minute '45s'."""
  seconds = max(int(round(seconds)), 0)
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f'{hours}h{minutes:02d}m'
  if minutes:
    return f'{minutes}m{secs:02d}s'
  return f'{secs}s'


class ProgressReport:
  """Logs the speed, the share done and the time left, every `every_secs` and at
  the last step; writes `uptime` (seconds since the report was made).

  Call it with the step just finished. The first call starts the clock: the
  speed is measured over the steps since the previous report.
  """

  def __init__(self, num_steps: int, writer: Optional[Writer] = None, every_secs: float = 60.0):
    self._num_steps = num_steps
    self._writer = writer
    self._every_secs = every_secs
    self._start = time.monotonic()
    self._previous: Optional[tuple] = None  # (step, time) of the previous report

  def __call__(self, step: int) -> None:
    now = time.monotonic()
    if self._previous is None:
      self._previous = (step, now)
      return
    last_step, last_time = self._previous
    if step == last_step or (step != self._num_steps and now - last_time < self._every_secs):
      return
    steps_per_sec = (step - last_step) / max(now - last_time, 1e-9)
    eta = (self._num_steps - step) / max(steps_per_sec, 1e-9)
    logging.info(
      'Step %d/%d (%.1f%%), %.2f steps/s, ETA %s',
      step,
      self._num_steps,
      100.0 * step / self._num_steps,
      steps_per_sec,
      format_duration(eta),
    )
    if self._writer is not None:
      self._writer.write_scalars(step, {'uptime': now - self._start})
    self._previous = (step, now)
