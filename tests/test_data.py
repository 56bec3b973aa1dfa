"""Tests of pga_jax.data: batch pipeline, folder / IDX / tfds sources.

Expected values are computed independently in the tests (numpy permutations,
PIL crops done here, IDX files parsed here, a numpy bicubic resize), never by
calling the code under test a second time.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
import shutil
import struct
from typing import Optional

import numpy as np
import pytest
from PIL import Image

from pga_jax.data import BatchSource, DatasetError, dataset_info, load_split
from pga_jax.data import fashion_mnist_offline
from tests.gcs_emulator import create_bucket, list_objects, put_object, run_script

DEBIAN_FASHION_DIR = '/usr/share/datasets/fashion-mnist'
BUCKET = 'pga-test'  # in the GCS emulator


# ---------------------------------------------------------------- helpers


def indexed_images(n: int) -> np.ndarray:
  """uint8 (n, 2, 2, 1) images whose pixels encode their own index."""
  images = np.zeros((n, 2, 2, 1), np.uint8)
  images[:, 0, 0, 0] = np.arange(n) % 256
  images[:, 0, 1, 0] = np.arange(n) // 256
  images[:, 1, 1, 0] = 255
  return images


def decode_indices(batch: np.ndarray) -> np.ndarray:
  """Inverse of `indexed_images` on a batch scaled to [-1, 1]."""
  pixels = np.rint((batch.astype(np.float64) + 1.0) * 127.5).astype(np.int64)
  return pixels[:, 0, 0, 0] + 256 * pixels[:, 0, 1, 0]


def permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  """The documented epoch order, computed here."""
  return np.random.default_rng([seed, epoch]).permutation(n)


def write_idx(path: str, array: np.ndarray, magic: Optional[int] = None) -> None:
  """Writes a uint8 IDX file (gzip-compressed if path ends in .gz)."""
  if magic is None:
    magic = 0x0800 | array.ndim
  data = struct.pack('>I', magic)
  data += b''.join(struct.pack('>I', d) for d in array.shape)
  data += array.astype(np.uint8).tobytes()
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'wb') as f:
    f.write(data)


def read_idx_gz_here(path: str, header: int) -> np.ndarray:
  """Parses an MNIST .gz file without the code under test."""
  with gzip.open(path, 'rb') as f:
    return np.frombuffer(f.read(), np.uint8, offset=header)


def pil_expected(path: str, size: int, mode: str) -> np.ndarray:
  """Center crop (numpy slicing) then PIL bicubic resize, done in the test."""
  with Image.open(path) as image:
    pixels = np.asarray(image.convert(mode))
  height, width = pixels.shape[:2]
  side = min(height, width)
  top, left = (height - side) // 2, (width - side) // 2
  crop = pixels[top : top + side, left : left + side]
  resized = np.asarray(Image.fromarray(crop).resize((size, size), Image.BICUBIC))
  return resized.reshape(size, size, -1)


def keys_cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
  """Keys' cubic convolution kernel."""
  x = np.abs(x)
  near = (a + 2) * x**3 - (a + 3) * x**2 + 1
  far = a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
  return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out, in) resampling matrix: half-pixel centers, Keys a=-0.5, taps
  outside the image dropped and the remaining weights renormalised."""
  matrix = np.zeros((out_size, in_size))
  scale = in_size / out_size
  for out in range(out_size):
    center = (out + 0.5) * scale - 0.5
    taps = np.arange(np.floor(center) - 1, np.floor(center) + 3).astype(int)
    weights = keys_cubic(center - taps)
    inside = (taps >= 0) & (taps < in_size)
    matrix[out, taps[inside]] = weights[inside] / weights[inside].sum()
  return matrix


def numpy_celeb_a(images: np.ndarray) -> np.ndarray:
  """Crop rows 55:163, cols 35:143, bicubic to 64x64, round; in numpy."""
  crop = images[:, 55:163, 35:143, :].astype(np.float64)
  rows = bicubic_matrix(108, 64)
  resized = np.einsum('oh,nhwc,pw->nopc', rows, crop, rows)
  return np.clip(np.rint(resized), 0, 255).astype(np.uint8)


# ------------------------------------------------------------ BatchSource


def test_batches_are_a_pure_function_of_seed_and_step():
  images = indexed_images(100)
  first = BatchSource(images, 10, seed=3)
  second = BatchSource(images, 10, seed=3)
  other = BatchSource(images, 10, seed=4)
  for step in (0, 4, 9, 10, 23, 7):  # out of order, across epochs
    np.testing.assert_array_equal(first.batch_at(step), second.batch_at(step))
  assert not np.array_equal(first.batch_at(0), other.batch_at(0))


def test_batches_follow_the_documented_permutation():
  seed, n, batch = 5, 50, 8  # 6 steps per epoch, 2 examples dropped
  source = BatchSource(indexed_images(n), batch, seed=seed)
  assert source.steps_per_epoch == 6
  for step in (0, 5, 6, 13):
    epoch, position = divmod(step, 6)
    expected = permutation(seed, epoch, n)[position * batch : (position + 1) * batch]
    np.testing.assert_array_equal(decode_indices(source.batch_at(step)), expected)


def test_each_epoch_visits_every_index_exactly_once():
  n, batch = 48, 8
  source = BatchSource(indexed_images(n), batch, seed=11)
  epochs = []
  for epoch in range(3):
    steps = range(epoch * 6, (epoch + 1) * 6)
    seen = np.concatenate([decode_indices(source.batch_at(s)) for s in steps])
    np.testing.assert_array_equal(np.sort(seen), np.arange(n))
    epochs.append(seen)
  assert not np.array_equal(epochs[0], epochs[1])  # reshuffled every epoch


def test_resuming_at_a_step_gives_the_same_batches():
  source = BatchSource(indexed_images(64), 16, seed=0)
  uninterrupted = list(source.iterate(0, num_steps=12))
  resumed = list(BatchSource(indexed_images(64), 16, seed=0).iterate(7, num_steps=5))
  assert [s for s, _ in uninterrupted] == list(range(12))
  assert [s for s, _ in resumed] == list(range(7, 12))
  for (step_a, batch_a), (step_b, batch_b) in zip(uninterrupted[7:], resumed):
    assert step_a == step_b
    np.testing.assert_array_equal(batch_a, batch_b)
    np.testing.assert_array_equal(batch_b, source.batch_at(step_b))


def test_endless_iterator_can_be_closed():
  source = BatchSource(indexed_images(20), 4, seed=0)
  iterator = source.iterate(3)
  steps = [next(iterator)[0] for _ in range(9)]
  iterator.close()
  assert steps == list(range(3, 12))
  with pytest.raises(StopIteration):
    next(iterator)


def test_process_shards_are_disjoint_and_form_the_global_batch():
  images = indexed_images(200)
  single = BatchSource(images, 16, seed=2)
  shards = [BatchSource(images, 16, seed=2, process_index=p, process_count=4) for p in range(4)]
  for step in (0, 1, 12, 25):
    parts = [shard.batch_at(step) for shard in shards]
    assert all(part.shape == (4, 2, 2, 1) for part in parts)
    np.testing.assert_array_equal(np.concatenate(parts), single.batch_at(step))
    index_sets = [set(decode_indices(part)) for part in parts]
    assert sum(len(s) for s in index_sets) == 16
    assert len(set.union(*index_sets)) == 16


def test_batches_are_scaled_to_minus_one_one():
  images = np.arange(256, dtype=np.uint8).reshape(4, 8, 8, 1)
  source = BatchSource(images, 4, seed=0)
  batch = source.batch_at(0)
  assert batch.dtype == np.float32 and batch.shape == (4, 8, 8, 1)
  order = permutation(0, 0, 4)
  expected = images[order].astype(np.float64) / 127.5 - 1.0
  np.testing.assert_allclose(batch, expected, rtol=0, atol=1e-6)
  assert batch.min() == -1.0 and batch.max() == 1.0


def test_batch_source_validates_its_arguments():
  images = indexed_images(10)
  with pytest.raises(ValueError, match='process_count'):
    BatchSource(images, 6, seed=0, process_index=0, process_count=4)
  with pytest.raises(ValueError, match='global_batch_size'):
    BatchSource(images, 16, seed=0)
  with pytest.raises(ValueError, match='process_index'):
    BatchSource(images, 4, seed=0, process_index=2, process_count=2)
  with pytest.raises(ValueError, match='uint8'):
    BatchSource(images.astype(np.float32), 4, seed=0)


# ----------------------------------------------------------------- folder


def save(image: Image.Image, path) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image.save(path)
  return str(path)


def random_image(rng, width: int, height: int, mode: str = 'RGB') -> Image.Image:
  channels = {'RGB': 3, 'L': 1, 'RGBA': 4}[mode]
  pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
  return Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)


def test_folder_crops_and_resizes_like_pil(tmp_path):
  rng = np.random.default_rng(0)
  files = [
    save(random_image(rng, 40, 30), tmp_path / 'a.png'),
    save(random_image(rng, 25, 51), tmp_path / 'b.png'),
    save(random_image(rng, 16, 16), tmp_path / 'nested' / 'c.png'),
    save(random_image(rng, 61, 45), tmp_path / 'nested' / 'deeper' / 'd.jpg'),
  ]
  split = load_split('folder', 'train', str(tmp_path), image_size=16, channels=3)
  assert split.images.dtype == np.uint8 and split.images.shape == (4, 16, 16, 3)
  assert split.labels is None and split.num_skipped == 0
  for got, path in zip(split.images, sorted(files)):
    np.testing.assert_array_equal(got, pil_expected(path, 16, 'RGB'))
  # The 16x16 file is only decoded: the output is its exact pixels.
  with Image.open(files[2]) as image:
    np.testing.assert_array_equal(split.images[2], np.asarray(image))


def test_folder_grayscale_images(tmp_path):
  rng = np.random.default_rng(1)
  paths = [save(random_image(rng, 30 + i, 20, 'L'), tmp_path / f'{i}.png') for i in range(3)]
  split = load_split('folder', 'train', str(tmp_path), image_size=12, channels=1)
  assert split.images.shape == (3, 12, 12, 1)
  for got, path in zip(split.images, sorted(paths)):
    np.testing.assert_array_equal(got, pil_expected(path, 12, 'L'))


def test_folder_uses_split_subfolders(tmp_path):
  rng = np.random.default_rng(2)
  save(random_image(rng, 8, 8), tmp_path / 'train' / 'x.png')
  save(random_image(rng, 8, 8), tmp_path / 'train' / 'y.png')
  save(random_image(rng, 8, 8), tmp_path / 'test' / 'z.png')
  assert len(load_split('folder', 'train', str(tmp_path), 8, 3).images) == 2
  assert len(load_split('folder', 'test', str(tmp_path), 8, 3).images) == 1
  with pytest.raises(DatasetError, match='validation'):
    load_split('folder', 'validation', str(tmp_path), 8, 3)


def test_folder_empty_is_an_error(tmp_path):
  with pytest.raises(DatasetError) as error:
    load_split('folder', 'train', str(tmp_path), image_size=8, channels=3)
  assert str(tmp_path) in str(error.value) and 'no files' in str(error.value)


def test_folder_bad_files_fail_or_are_skipped(tmp_path, caplog):
  rng = np.random.default_rng(3)
  good = [save(random_image(rng, 20, 24), tmp_path / f'good{i}.png') for i in range(2)]
  (tmp_path / 'notes.txt').write_text('not an image')  # not an image file name: ignored
  (tmp_path / 'not_really.JPG').write_text('not an image')
  truncated = tmp_path / 'sub' / 'truncated.png'
  save(random_image(rng, 64, 64), truncated)
  truncated.write_bytes(truncated.read_bytes()[:200])

  with pytest.raises(DatasetError) as error:
    load_split('folder', 'train', str(tmp_path), image_size=8, channels=3)
  assert 'not_really.JPG' in str(error.value) and 'notes.txt' not in str(error.value)
  assert 'skip_bad_files' in str(error.value)

  with caplog.at_level(logging.WARNING):
    split = load_split(
      'folder', 'train', str(tmp_path), image_size=8, channels=3, skip_bad_files=True
    )
  assert split.num_skipped == 2
  assert split.images.shape == (2, 8, 8, 3)
  for got, path in zip(split.images, good):
    np.testing.assert_array_equal(got, pil_expected(path, 8, 'RGB'))
  assert 'skipped 2' in caplog.text


def test_folder_wrong_channel_count_is_an_error(tmp_path):
  rng = np.random.default_rng(4)
  save(random_image(rng, 10, 10), tmp_path / 'a_rgb.png')
  save(random_image(rng, 10, 10, 'L'), tmp_path / 'b_gray.png')
  with pytest.raises(DatasetError) as error:
    load_split('folder', 'train', str(tmp_path), image_size=8, channels=3)
  assert 'b_gray.png' in str(error.value) and 'channels' in str(error.value)
  with pytest.raises(DatasetError) as error:
    load_split('folder', 'train', str(tmp_path), image_size=8, channels=1)
  assert 'a_rgb.png' in str(error.value) and 'channels' in str(error.value)
  # Unset channels: taken from the first file, the others must agree.
  with pytest.raises(DatasetError, match='b_gray.png'):
    load_split('folder', 'train', str(tmp_path), image_size=8)

  rgba_dir = tmp_path / 'rgba'
  save(random_image(rng, 10, 10, 'RGBA'), rgba_dir / 'alpha.png')
  with pytest.raises(DatasetError, match=r'alpha\.png has 4 channel'):
    load_split('folder', 'train', str(rgba_dir), image_size=8, channels=3)


# -------------------------------------------------------------------- idx


@pytest.mark.parametrize('suffix', ['', '.gz'])
def test_idx_files_are_parsed(tmp_path, suffix):
  rng = np.random.default_rng(5)
  train = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
  train_labels = rng.integers(0, 10, 7, dtype=np.uint8)
  test = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
  write_idx(str(tmp_path / f'train-images-idx3-ubyte{suffix}'), train)
  write_idx(str(tmp_path / f'train-labels-idx1-ubyte{suffix}'), train_labels)
  write_idx(str(tmp_path / f't10k-images-idx3-ubyte{suffix}'), test)

  split = load_split('idx', 'train', str(tmp_path), image_size=28, channels=1)
  np.testing.assert_array_equal(split.images, train[..., None])
  np.testing.assert_array_equal(split.labels, train_labels)
  test_split = load_split('idx', 'test', str(tmp_path))
  np.testing.assert_array_equal(test_split.images, test[..., None])
  assert test_split.labels is None  # no t10k labels file


def test_idx_bad_magic_and_truncation_are_errors(tmp_path):
  images = np.zeros((2, 4, 4), np.uint8)
  path = tmp_path / 'train-images-idx3-ubyte'
  write_idx(str(path), images, magic=0x01020803)
  with pytest.raises(DatasetError) as error:
    load_split('idx', 'train', str(tmp_path))
  assert 'magic' in str(error.value) and str(path) in str(error.value)

  write_idx(str(path), images)
  path.write_bytes(path.read_bytes()[:-5])
  with pytest.raises(DatasetError, match='truncated'):
    load_split('idx', 'train', str(tmp_path))

  gz_dir = tmp_path / 'gz'
  gz_dir.mkdir()
  gz_path = gz_dir / 'train-images-idx3-ubyte.gz'
  write_idx(str(gz_path), images)
  gz_path.write_bytes(gz_path.read_bytes()[:-6])
  with pytest.raises(DatasetError, match='gzip'):
    load_split('idx', 'train', str(gz_dir))


def test_idx_labels_must_match_images(tmp_path):
  write_idx(str(tmp_path / 'train-images-idx3-ubyte'), np.zeros((3, 4, 4), np.uint8))
  write_idx(str(tmp_path / 'train-labels-idx1-ubyte'), np.zeros(2, np.uint8))
  with pytest.raises(DatasetError, match='labels'):
    load_split('idx', 'train', str(tmp_path))


# ----------------------------------------------------- missing data errors


def test_missing_file_data_errors_name_dataset_and_location(tmp_path):
  with pytest.raises(DatasetError) as error:
    load_split('idx', 'train', str(tmp_path))
  message = str(error.value)
  assert "'idx'" in message and str(tmp_path) in message
  assert 'train-images-idx3-ubyte' in message

  missing = str(tmp_path / 'does-not-exist')
  with pytest.raises(DatasetError) as error:
    load_split('folder', 'train', missing, image_size=8, channels=3)
  assert "'folder'" in str(error.value) and missing in str(error.value)
  with pytest.raises(DatasetError, match='data_dir'):
    load_split('idx', 'train', None)


@pytest.mark.parametrize('dataset', ['mnist', 'cifar10', 'celeb_a'])
def test_missing_tfds_data_error_names_dataset_and_location(tmp_path, dataset):
  data_dir = str(tmp_path / 'tfds')
  with pytest.raises(DatasetError) as error:
    load_split(dataset, 'train', data_dir, allow_download=False)
  message = str(error.value)
  assert repr(dataset) in message and data_dir in message
  assert 'internet' in message


def test_failed_tfds_download_becomes_a_dataset_error(tmp_path, monkeypatch):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  def no_network(self, *args, **kwargs):
    raise ConnectionError('simulated: no route to host')

  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', no_network)
  from pga_jax.data import tfds_sources  # pylint: disable=g-import-not-at-top

  monkeypatch.setattr(tfds_sources, '_unreachable', lambda host: None)  # the server answers
  data_dir = str(tmp_path / 'tfds')
  with pytest.raises(DatasetError) as error:
    load_split('cifar10', 'train', data_dir)
  message = str(error.value)
  assert "'cifar10'" in message and data_dir in message
  assert 'simulated: no route to host' in message
  assert isinstance(error.value.__cause__, ConnectionError)


def test_unreachable_download_server_fails_at_once_without_trying_tfds(tmp_path, monkeypatch):
  import socket  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  hosts = []

  def no_connection(address, timeout=None):
    hosts.append(address)
    raise socket.gaierror(-3, 'Temporary failure in name resolution')

  def must_not_run(self, *args, **kwargs):
    raise AssertionError('tfds download_and_prepare ran (and would retry for minutes)')

  monkeypatch.setattr(socket, 'create_connection', no_connection)
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', must_not_run)
  data_dir = str(tmp_path / 'tfds')
  with pytest.raises(DatasetError) as error:
    load_split('mnist', 'train', data_dir)
  message = str(error.value)
  assert hosts == [('storage.googleapis.com', 443)]
  assert 'cannot reach its download server storage.googleapis.com' in message
  assert 'name resolution' in message and data_dir in message


def test_missing_fashion_mnist_error_says_how_to_get_it(tmp_path, monkeypatch):
  empty = tmp_path / 'no-files-here'
  empty.mkdir()
  monkeypatch.setenv(fashion_mnist_offline.ENV_VAR, str(empty))
  data_dir = str(tmp_path / 'tfds')
  with pytest.raises(DatasetError) as error:
    load_split('fashion_mnist', 'train', data_dir, allow_download=False)
  message = str(error.value)
  for part in (
    "'fashion_mnist'",
    data_dir,
    str(empty),
    'apt-get install dataset-fashion-mnist',
    fashion_mnist_offline.ENV_VAR,
    'train-images-idx3-ubyte.gz',
  ):
    assert part in message


def test_dataset_info():
  assert dataset_info('mnist') == (28, 1)
  assert dataset_info('fashion_mnist') == (28, 1)
  assert dataset_info('cifar10') == (32, 3)
  assert dataset_info('celeb_a') == (64, 3)
  assert dataset_info('folder', 48, 3) == (48, 3)
  with pytest.raises(ValueError, match='image_size'):
    dataset_info('idx')
  with pytest.raises(ValueError, match='unknown dataset'):
    dataset_info('imagenet')


# ------------------------------------------------------ tfds preprocessing


def test_celeb_a_crop_resize_matches_numpy_bicubic():
  from pga_jax.data import tfds_sources  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(6)
  # Smooth content plus noise, so the check is not dominated by clipping.
  yy, xx = np.mgrid[0:218, 0:178]
  base = 127 + 100 * np.sin(yy / 9.0)[..., None] * np.cos(xx / 13.0)[..., None]
  images = np.clip(base + rng.normal(0, 20, (2, 218, 178, 3)), 0, 255)
  images = images.astype(np.uint8)

  got = tfds_sources.celeb_a_crop_resize(images)
  expected = numpy_celeb_a(images)
  assert got.shape == (2, 64, 64, 3) and got.dtype == np.uint8
  difference = np.abs(got.astype(int) - expected.astype(int))
  assert difference.max() <= 1  # float rounding at .5 boundaries only
  assert (difference == 0).mean() > 0.99

  # Only the 108x108 crop at rows 55:163, columns 35:143 matters.
  outside = images.copy()
  outside[:, :55] = 255
  outside[:, 163:] = 0
  outside[:, :, :35] = 255
  outside[:, :, 143:] = 0
  np.testing.assert_array_equal(tfds_sources.celeb_a_crop_resize(outside), got)
  shifted = images.copy()
  shifted[:, 55] = 255 - shifted[:, 55]
  assert not np.array_equal(tfds_sources.celeb_a_crop_resize(shifted), got)


@pytest.mark.parametrize(
  'dataset, raw_shape, has_labels',
  [('mnist', (28, 28, 1), True), ('cifar10', (32, 32, 3), True), ('celeb_a', (218, 178, 3), False)],
)
def test_tfds_path_on_mocked_data(tmp_path, dataset, raw_shape, has_labels, monkeypatch):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from pga_jax.data import tfds_sources  # pylint: disable=g-import-not-at-top

  # mock_data replaces the download; the check that its server answers must pass offline too.
  monkeypatch.setattr(tfds_sources, '_unreachable', lambda host: None)
  size, channels = dataset_info(dataset)
  with tfds.testing.mock_data(num_examples=5):
    split = load_split(dataset, 'train', str(tmp_path), image_size=size, channels=channels)
    examples = list(tfds.as_numpy(tfds.builder(dataset).as_dataset(split='train')))
  raw = {key: np.stack([ex[key] for ex in examples]) for key in examples[0]}
  assert raw['image'].shape == (5,) + raw_shape
  assert split.images.dtype == np.uint8
  assert split.images.shape == (5, size, size, channels)
  if dataset == 'celeb_a':
    difference = np.abs(split.images.astype(int) - numpy_celeb_a(raw['image']).astype(int))
    assert difference.max() <= 1 and (difference == 0).mean() > 0.99
    assert split.labels is None
  else:
    np.testing.assert_array_equal(split.images, raw['image'])
    np.testing.assert_array_equal(split.labels, raw['label'])
  assert has_labels == (split.labels is not None)


def test_tfds_shape_mismatch_is_an_error(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  with tfds.testing.mock_data(num_examples=2):
    with pytest.raises(DatasetError, match='image_size'):
      load_split('mnist', 'train', str(tmp_path), image_size=32)
    with pytest.raises(DatasetError, match='channels'):
      load_split('cifar10', 'train', str(tmp_path), channels=1)


# --------------------------------------------- fashion_mnist offline build


@dataclasses.dataclass
class FashionBuild:
  """What the module fixture did and got."""

  data_dir: str
  truncated_error: DatasetError
  interrupted_error: DatasetError
  leftovers_after_failures: list
  train: object
  test: object


def _variant_dir(data_dir: str) -> str:
  return os.path.join(data_dir, 'fashion_mnist', '3.0.1')


def _list_tree(path: str) -> list:
  return sorted(
    os.path.relpath(os.path.join(root, name), path)
    for root, dirs, files in os.walk(path)
    for name in dirs + files
  )


@pytest.fixture(scope='module')
def fashion_build(tmp_path_factory):
  """Two failed builds into one data_dir, then a good one into the same dir."""
  from tensorflow_datasets.image_classification import mnist as tfds_mnist  # pylint: disable=g-import-not-at-top

  root = tmp_path_factory.mktemp('fashion')
  data_dir = str(root / 'tfds')

  # 1. A copy of the Debian files with a truncated train-images .gz.
  bad_dir = root / 'truncated-copy'
  shutil.copytree(DEBIAN_FASHION_DIR, bad_dir)
  bad_file = bad_dir / 'train-images-idx3-ubyte.gz'
  bad_file.write_bytes(bad_file.read_bytes()[:1_000_000])
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv(fashion_mnist_offline.ENV_VAR, str(bad_dir))
    with pytest.raises(DatasetError) as truncated:
      load_split('fashion_mnist', 'test', data_dir, allow_download=False)

  # 2. Good files, but the build dies half-way through writing examples.
  real_generate = tfds_mnist.MNIST._generate_examples

  def dying_generate(self, *args, **kwargs):
    for count, example in enumerate(real_generate(self, *args, **kwargs)):
      if count == 500:
        raise RuntimeError('simulated interruption')
      yield example

  with pytest.MonkeyPatch.context() as patch:
    patch.setenv(fashion_mnist_offline.ENV_VAR, DEBIAN_FASHION_DIR)
    patch.setattr(tfds_mnist.MNIST, '_generate_examples', dying_generate)
    with pytest.raises(DatasetError) as interrupted:
      load_split('fashion_mnist', 'train', data_dir, allow_download=False)
  leftovers = _list_tree(data_dir) if os.path.isdir(data_dir) else []

  # 3. The real build, from the default location (no env var).
  with pytest.MonkeyPatch.context() as patch:
    patch.delenv(fashion_mnist_offline.ENV_VAR, raising=False)
    train = load_split('fashion_mnist', 'train', data_dir, allow_download=False)
    test = load_split('fashion_mnist', 'test', data_dir, allow_download=False)
  return FashionBuild(data_dir, truncated.value, interrupted.value, leftovers, train, test)


def _sorted_rows(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """(image, label) pairs as sortable byte rows, for order-free comparison."""
  rows = np.concatenate([images.reshape(len(images), -1), labels.astype(np.uint8)[:, None]], axis=1)
  rows = np.ascontiguousarray(rows)
  return np.sort(rows.view(np.dtype((np.void, rows.shape[1]))).ravel())


@pytest.mark.slow
def test_fashion_mnist_offline_build_matches_the_idx_files(fashion_build):
  for split, prefix, count in (
    (fashion_build.train, 'train', 60000),
    (fashion_build.test, 't10k', 10000),
  ):
    assert split.images.shape == (count, 28, 28, 1)
    assert split.images.dtype == np.uint8
    assert split.labels.shape == (count,)
    assert set(np.unique(split.labels)) == set(range(10))
    images = read_idx_gz_here(
      os.path.join(DEBIAN_FASHION_DIR, f'{prefix}-images-idx3-ubyte.gz'), 16
    ).reshape(count, 28, 28)
    labels = read_idx_gz_here(os.path.join(DEBIAN_FASHION_DIR, f'{prefix}-labels-idx1-ubyte.gz'), 8)
    # tfds stores examples in its own (deterministic) order: compare the
    # (image, label) pairs as multisets, then a few images one by one.
    np.testing.assert_array_equal(
      _sorted_rows(split.images[..., 0], split.labels), _sorted_rows(images, labels)
    )
    lookup = {image.tobytes(): i for i, image in enumerate(images)}
    for got_image, got_label in zip(split.images[:5, ..., 0], split.labels[:5]):
      source_index = lookup[got_image.tobytes()]
      np.testing.assert_array_equal(got_image, images[source_index])
      assert got_label == labels[source_index]


@pytest.mark.slow
def test_fashion_mnist_is_a_normal_tfds_dataset(fashion_build):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  builder = tfds.builder('fashion_mnist', data_dir=fashion_build.data_dir)
  assert type(builder).__module__.startswith('tensorflow_datasets.')
  assert builder.is_prepared()
  assert builder.info.splits['train'].num_examples == 60000
  assert builder.info.splits['test'].num_examples == 10000


@pytest.mark.slow
def test_fashion_mnist_second_call_reuses_the_cache(fashion_build, monkeypatch):
  info_file = os.path.join(_variant_dir(fashion_build.data_dir), 'dataset_info.json')
  mtime = os.stat(info_file).st_mtime_ns

  def must_not_build(*args, **kwargs):
    raise AssertionError('the prepared dataset was rebuilt')

  monkeypatch.setattr(fashion_mnist_offline, 'build_from_local_files', must_not_build)
  again = load_split('fashion_mnist', 'test', fashion_build.data_dir, allow_download=False)
  np.testing.assert_array_equal(again.images, fashion_build.test.images)
  np.testing.assert_array_equal(again.labels, fashion_build.test.labels)
  assert os.stat(info_file).st_mtime_ns == mtime


@pytest.mark.slow
def test_failed_fashion_mnist_builds_leave_no_cache(fashion_build):
  truncated = str(fashion_build.truncated_error)
  assert 'train-images-idx3-ubyte.gz' in truncated and 'gzip' in truncated
  interrupted = str(fashion_build.interrupted_error)
  assert 'simulated interruption' in interrupted
  assert fashion_build.data_dir in interrupted
  assert isinstance(fashion_build.interrupted_error.__cause__, RuntimeError)
  # Neither a dataset nor a half-written temporary folder survived them ...
  assert not any('3.0.1' in path for path in fashion_build.leftovers_after_failures)
  assert not any('incomplete' in path for path in fashion_build.leftovers_after_failures)
  # ... and the later build in the same data_dir produced the full dataset.
  assert len(fashion_build.train.images) == 60000


@pytest.mark.slow
def test_damaged_prepared_files_are_an_error(fashion_build, tmp_path):
  data_dir = tmp_path / 'tfds'
  shutil.copytree(_variant_dir(fashion_build.data_dir), data_dir / 'fashion_mnist' / '3.0.1')
  record = data_dir / 'fashion_mnist' / '3.0.1' / ('fashion_mnist-test.tfrecord-00000-of-00001')
  record.write_bytes(record.read_bytes()[: len(record.read_bytes()) // 2])
  with pytest.raises(DatasetError) as error:
    load_split('fashion_mnist', 'test', str(data_dir), allow_download=False)
  assert 'damaged' in str(error.value) and str(data_dir) in str(error.value)


@pytest.mark.slow
def test_tfds_data_prepared_in_gs_is_read_like_the_local_copy(fashion_build, emulator):
  """The fashion_mnist prepared here, copied into a GCS emulator's bucket with
  urllib, is read from gs:// (through a temporary local copy) like the local
  one; a gs:// folder without it is a DatasetError naming it."""
  url = emulator
  create_bucket(url, BUCKET)
  local = fashion_build.data_dir
  script = """
import sys
from pga_jax import storage
storage.configure_environment()
import numpy as np
from pga_jax import data
local, remote = sys.argv[1], sys.argv[2]
a = data.load_split('fashion_mnist', 'test', local, allow_download=False)
b = data.load_split('fashion_mnist', 'test', remote, allow_download=False)
assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
print('equal', b.images.shape)
try:
  data.load_split('fashion_mnist', 'test', remote + '_empty', allow_download=False)
except data.DatasetError as err:
  print('error:', err)
"""
  for root, _, files in os.walk(local):
    for name in files:
      relative = os.path.relpath(os.path.join(root, name), local).replace(os.sep, '/')
      with open(os.path.join(root, name), 'rb') as f:
        put_object(url, BUCKET, f'tfds/{relative}', f.read())
  assert any(
    n.startswith('tfds/fashion_mnist/') and n.endswith('dataset_info.json')
    for n in list_objects(url, BUCKET, 'tfds/')
  )
  result = run_script(script, str(local), f'gs://{BUCKET}/tfds', url=url, timeout=600)
  assert 'equal (10000, 28, 28, 1)' in result.stdout, result.stdout
  assert (
    f"error: dataset 'fashion_mnist' is not prepared in gs://{BUCKET}/tfds_empty" in result.stdout
  ), result.stdout


def test_fashion_mnist_file_verification_rejects_wrong_content(tmp_path):
  # Plain-MNIST-shaped files that are not Fashion-MNIST: right header, wrong data.
  for name, expected in fashion_mnist_offline.EXPECTED_FILES.items():
    write_idx(str(tmp_path / name), np.zeros(expected.shape, np.uint8))
  with pytest.raises(DatasetError, match='SHA-256'):
    fashion_mnist_offline.verify_local_files(str(tmp_path))
  os.remove(tmp_path / 't10k-labels-idx1-ubyte.gz')
  with pytest.raises(DatasetError, match='t10k-labels-idx1-ubyte.gz'):
    fashion_mnist_offline.verify_local_files(str(tmp_path))


def test_an_unknown_tfds_split_is_a_dataset_error_naming_the_splits():
  from pga_jax.data import tfds_sources  # pylint: disable=g-import-not-at-top

  class Builder:  # tfds's answer to a split it does not have (checked by hand on fashion_mnist)
    data_dir = '/data/fashion_mnist/3.0.1'

    class info:  # pylint: disable=invalid-name
      splits = {'train': None, 'test': None}

    def as_dataset(self, split, shuffle_files):
      raise ValueError(f"Unknown split '{split}'. Should be one of ['train', 'test'].")

  with pytest.raises(DatasetError) as error:
    tfds_sources.read_split(Builder(), 'fashion_mnist', 'tset')
  assert str(error.value) == (
    "dataset 'fashion_mnist': unknown split 'tset'; choose one of ['test', 'train'] "
    "(or a slice such as 'train[:10%]')"
  )
