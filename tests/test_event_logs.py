"""The event files written without TensorFlow hold what tf.summary writes.

The reference is clu's SummaryWriter (tf.summary) given the same scalars,
images and hyperparameters; both files are read back with TensorFlow's own
TFRecord reader, which checks every record's checksums.
"""

import io
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pga_jax import event_logs


def read_events(path):
  """[(step, tag, plugin name, tensor as numpy)] of the summaries in an event file."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  found = []
  for record in tf.data.TFRecordDataset(path):
    event = tf.compat.v1.Event.FromString(record.numpy())
    for value in event.summary.value:
      found.append(
        (
          event.step,
          value.tag,
          value.metadata.plugin_data.plugin_name,
          tf.make_ndarray(value.tensor),
        )
      )
  return found


def hparams_of(path):
  """{name: value} of the event file's hparams session-start summary."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorboard.plugins.hparams import metadata  # pylint: disable=g-import-not-at-top

  for record in tf.data.TFRecordDataset(path):
    for value in tf.compat.v1.Event.FromString(record.numpy()).summary.value:
      if value.metadata.plugin_data.plugin_name == 'hparams':
        info = metadata.parse_session_start_info_plugin_data(value.metadata.plugin_data.content)
        return {k: getattr(v, v.WhichOneof('kind')) for k, v in info.hparams.items()}
  return None


def only_file(directory):
  (name,) = os.listdir(directory)
  assert name.startswith('events.out.tfevents.'), name
  return os.path.join(directory, name)


def write_all(writer):
  rng = np.random.default_rng(0)
  writer.write_hparams({'method': 'lpga', 'batch_size': 64, 'lr': 0.005, 'bn': True})
  writer.write_scalars(3, {'loss': 0.25, 'rec': np.float32(1.5e-3)})
  writer.write_scalars(7, {'loss': -2.0})
  images = {
    'gray': rng.integers(0, 256, (1, 5, 7, 1), dtype=np.uint8),
    'rgb': rng.integers(0, 256, (1, 6, 4, 3), dtype=np.uint8),
  }
  writer.write_images(7, images)
  writer.close()
  return images


def test_scalars_images_and_hparams_read_back_like_tf_summary(tmp_path):
  from clu import metric_writers  # pylint: disable=g-import-not-at-top

  ours_dir, theirs_dir = tmp_path / 'ours', tmp_path / 'theirs'
  images = write_all(event_logs.EventFileWriter(str(ours_dir)))
  write_all(metric_writers.SummaryWriter(str(theirs_dir)))
  ours = read_events(only_file(ours_dir))
  theirs = read_events(only_file(theirs_dir))

  def by_key(events, plugin):
    return {(s, t): v for s, t, p, v in events if p == plugin}

  # Scalars: float32 tensors under the 'scalars' plugin, equal values.
  assert (
    by_key(ours, 'scalars').keys()
    == by_key(theirs, 'scalars').keys()
    == {(3, 'loss'), (3, 'rec'), (7, 'loss')}
  )
  for key, value in by_key(theirs, 'scalars').items():
    assert by_key(ours, 'scalars')[key].dtype == value.dtype == np.float32
    assert by_key(ours, 'scalars')[key] == value, key
  # Images: [width, height, PNG]; the PNG decodes to the pixels written.
  for tag, pixels in images.items():
    for events in (ours, theirs):
      content = by_key(events, 'images')[(7, tag)]
      assert [int(content[0]), int(content[1])] == [pixels.shape[2], pixels.shape[1]]
      decoded = np.asarray(Image.open(io.BytesIO(content[2])))
      np.testing.assert_array_equal(decoded.reshape(pixels.shape[1:]), pixels[0])
  # Hyperparameters: the 'hparams' plugin's session-start summary, same values.
  expected = hparams_of(only_file(theirs_dir))
  assert expected == hparams_of(only_file(ours_dir))
  assert expected == {'method': 'lpga', 'batch_size': 64.0, 'lr': 0.005, 'bn': True}


def test_a_damaged_record_is_refused_by_tensorflows_reader(tmp_path):
  """The checksums are TFRecord's: the reader that checks them refuses a changed byte."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  writer = event_logs.EventFileWriter(str(tmp_path))
  writer.write_scalars(1, {'loss': 0.5})
  path = only_file(tmp_path)
  # Each event is in the file as soon as it is written (TensorBoard, a preempted run).
  assert [(s, t) for s, t, _, _ in read_events(path)] == [(1, 'loss')]
  writer.close()
  with open(path, 'rb') as f:
    data = bytearray(f.read())
  data[-6] ^= 0x01  # inside the last record's serialized event
  with open(path, 'wb') as f:
    f.write(bytes(data))
  with pytest.raises(tf.errors.DataLossError):
    read_events(path)


def test_each_writer_has_its_own_file_and_training_does_not_import_tensorflow(tmp_path):
  for _ in range(3):
    event_logs.EventFileWriter(str(tmp_path)).close()
  assert len(os.listdir(tmp_path)) == 3
  code = (
    'import sys, pga_jax.train, pga_jax.event_logs as e, numpy as np\n'
    f'w = e.create_writer({str(tmp_path / "run")!r})\n'
    "w.write_hparams({'a': 1}); w.write_scalars(1, {'loss': 1.0})\n"
    "w.write_images(1, {'g': np.zeros((1, 4, 4, 1), np.uint8)}); w.close()\n"
    "print('tensorflow' in sys.modules)\n"
  )
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == 'False', out.stdout + out.stderr


def test_log_lines_and_progress(caplog):
  caplog.set_level(logging.INFO)
  lines = event_logs.LogLinesWriter()
  lines.write_scalars(12, {'rec': 0.000123456789, 'finite': 1.0, 'steps': 3})
  assert '[12] finite=1, rec=0.000123457, steps=3' in caplog.text
  written = []

  class Recorder(event_logs.Writer):
    def write_scalars(self, step, scalars):
      written.append((step, sorted(scalars)))

  progress = event_logs.ProgressReport(num_steps=100, writer=Recorder(), every_secs=3600)
  progress(10)  # starts the clock
  progress(20)  # within the interval: nothing
  progress(100)  # the last step: always
  assert written == [(100, ['uptime'])]
  assert 'Step 100/100 (100.0%)' in caplog.text and 'ETA 0s' in caplog.text
  assert [event_logs.format_duration(s) for s in (5, 65, 3 * 3600 + 125, 30 * 3600)] == [
    '5s',
    '1m05s',
    '3h02m',
    '30h00m',
  ]
