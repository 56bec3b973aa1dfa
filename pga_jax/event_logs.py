"""TensorBoard event files in a local or a gs:// run directory.

For a local directory this is clu's default writer. For gs:// the events are
written by the same writer (tf.summary) into a local temporary directory and
uploaded to the run directory: whenever the writer is flushed, and at most
every `upload_every` seconds while metrics are written. (TensorFlow's own GCS
filesystem does the same: it re-uploads a growing file whole on each flush;
it is not used because it cannot be pointed at an emulator, see
`pga_jax.storage`.) Each writer has its own event file name, so uploads of
concurrent or resumed runs never overwrite each other.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any, Dict, Mapping, Optional

from clu import metric_writers
from clu.metric_writers import interface

from pga_jax import storage


def create_writer(
  workdir: str, just_logging: bool = False, upload_every: float = 60.0
) -> interface.MetricWriter:
  """clu's default writer (log lines + TensorBoard events in `workdir`)."""
  if just_logging or not storage.is_remote(workdir):
    return metric_writers.create_default_writer(workdir, just_logging=just_logging)
  return metric_writers.AsyncMultiWriter(
    [metric_writers.LoggingWriter(), UploadingSummaryWriter(workdir, upload_every)]
  )


class UploadingSummaryWriter(interface.MetricWriter):
  """A tf.summary writer on a local temporary directory, mirrored to `remote_dir`."""

  def __init__(self, remote_dir: str, upload_every: float = 60.0):
    self._remote_dir = remote_dir
    self._local_dir = tempfile.mkdtemp(prefix='pga_events_')
    self._writer = metric_writers.SummaryWriter(self._local_dir)
    self._upload_every = upload_every
    self._uploaded: Dict[str, int] = {}  # relative path -> size uploaded
    self._last_upload = time.monotonic()

  def _upload_changed(self) -> None:
    for root, _, files in os.walk(self._local_dir):
      for name in files:
        local = os.path.join(root, name)
        relative = os.path.relpath(local, self._local_dir)
        size = os.path.getsize(local)
        if self._uploaded.get(relative) != size:
          storage.upload(local, storage.join(self._remote_dir, *relative.split(os.sep)))
          self._uploaded[relative] = size
    self._last_upload = time.monotonic()

  def _maybe_upload(self) -> None:
    if time.monotonic() - self._last_upload >= self._upload_every:
      self.flush()

  def write_summaries(
    self, step: int, values: Mapping[str, Any], metadata: Optional[Mapping[str, Any]] = None
  ):
    self._writer.write_summaries(step, values, metadata)
    self._maybe_upload()

  def write_scalars(self, step: int, scalars):
    self._writer.write_scalars(step, scalars)
    self._maybe_upload()

  def write_images(self, step: int, images):
    self._writer.write_images(step, images)
    self._maybe_upload()

  def write_videos(self, step: int, videos):
    self._writer.write_videos(step, videos)
    self._maybe_upload()

  def write_audios(self, step: int, audios, *, sample_rate: int):
    self._writer.write_audios(step, audios, sample_rate=sample_rate)
    self._maybe_upload()

  def write_texts(self, step: int, texts):
    self._writer.write_texts(step, texts)
    self._maybe_upload()

  def write_histograms(self, step: int, arrays, num_buckets=None):
    self._writer.write_histograms(step, arrays, num_buckets)
    self._maybe_upload()

  def write_hparams(self, hparams):
    self._writer.write_hparams(hparams)
    self._maybe_upload()

  def flush(self):
    self._writer.flush()
    self._upload_changed()

  def close(self):
    try:
      self.flush()
    finally:
      self._writer.close()
      shutil.rmtree(self._local_dir, ignore_errors=True)
