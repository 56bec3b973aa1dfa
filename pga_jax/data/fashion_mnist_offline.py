"""Prepares tfds's `fashion_mnist` from local IDX files, without downloading.

Debian's package `dataset-fashion-mnist` installs the four Fashion-MNIST files
in /usr/share/datasets/fashion-mnist. tfds can take such files from a "manual
directory", but it validates them against the checksums it registers for the
upstream downloads, and Debian's .gz files differ from upstream's (their gzip
headers do not store the original file name), so tfds refuses them.

How this module handles that, without touching the installed tfds:
1. The project verifies the local files itself: every file must decompress
   completely (gzip's CRC and length checks), have the IDX header of its
   role (magic number and shape), and its *decompressed* content must have
   the SHA-256 pinned below. Those digests describe the data, not the gzip
   wrapper, so any genuine copy passes and a truncated, corrupt or wrong file
   (e.g. plain MNIST) fails with an error naming the file.
2. A small builder of the project's own, an unregistered subclass of tfds's
   `FashionMNIST` that keeps its name, version, features and example
   generation, registers the size and SHA-256 of the verified .gz files as
   the expected checksums. tfds's download manager then takes the files from
   the manual directory, checks them against those checksums
   (`force_checksums_validation`, so a file changed after step 1 is caught),
   extracts them and writes a normal `fashion_mnist/3.0.1` dataset into
   data_dir, the same one the stock builder writes and reads.
3. tfds builds into a temporary `incomplete.*` folder and renames it only on
   success; afterwards the project reopens the result with tfds's stock
   builder and checks the split sizes before trusting it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Dict, Mapping, NamedTuple, Optional, Tuple

import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import checksums as tfds_checksums
from tensorflow_datasets.image_classification import mnist as tfds_mnist

from pga_jax.data import idx, tfds_quiet
from pga_jax.data.errors import DatasetError

ENV_VAR = 'PGA_FASHION_MNIST_DIR'
DEFAULT_DIR = '/usr/share/datasets/fashion-mnist'
SPLIT_SIZES = {'train': 60000, 'test': 10000}


class ExpectedFile(NamedTuple):
  """What a Fashion-MNIST file holds once decompressed."""

  shape: Tuple[int, ...]
  sha256: str  # of the decompressed IDX file


EXPECTED_FILES: Mapping[str, ExpectedFile] = {
  'train-images-idx3-ubyte.gz': ExpectedFile(
    (60000, 28, 28), 'c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888'
  ),
  'train-labels-idx1-ubyte.gz': ExpectedFile(
    (60000,), 'bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9'
  ),
  't10k-images-idx3-ubyte.gz': ExpectedFile(
    (10000, 28, 28), '5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b'
  ),
  't10k-labels-idx1-ubyte.gz': ExpectedFile(
    (10000,), '0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34'
  ),
}

HOW_TO_GET = (
  'To get Fashion-MNIST: `apt-get install dataset-fashion-mnist` (installs '
  f'it in {DEFAULT_DIR}), or put the files {sorted(EXPECTED_FILES)} in a '
  f'folder and set {ENV_VAR} to it, or run once on a machine with internet '
  'access so tfds downloads it into data_dir.'
)


def local_files_dir(environ: Optional[Mapping[str, str]] = None) -> str:
  """Where to look for the .gz files: $PGA_FASHION_MNIST_DIR or Debian's path."""
  environ = os.environ if environ is None else environ
  return environ.get(ENV_VAR) or DEFAULT_DIR


def has_local_files(directory: str) -> bool:
  """Whether any Fashion-MNIST .gz file is in `directory` (then all must be)."""
  return any(os.path.isfile(os.path.join(directory, name)) for name in EXPECTED_FILES)


def verify_file(path: str, expected: ExpectedFile) -> tfds_checksums.UrlInfo:
  """Checks one local .gz file; returns its size and SHA-256 for tfds.

  Raises:
    DatasetError: the file is not valid gzip, not the right IDX array, or not
      Fashion-MNIST's content.
  """
  with open(path, 'rb') as f:
    compressed = f.read()
  content = idx.gunzip(compressed, path)
  array = idx.parse_idx(content, source=path)
  if array.shape != expected.shape:
    raise DatasetError(
      f"dataset 'fashion_mnist': {path} holds an array of shape "
      f'{array.shape}, expected {expected.shape}. {HOW_TO_GET}'
    )
  digest = hashlib.sha256(content).hexdigest()
  if digest != expected.sha256:
    raise DatasetError(
      f"dataset 'fashion_mnist': the decompressed content of {path} has "
      f'SHA-256 {digest}, expected {expected.sha256}: it is not '
      f'Fashion-MNIST (or is corrupt). {HOW_TO_GET}'
    )
  return tfds_checksums.UrlInfo(
    size=tfds.core.utils.Size(len(compressed)),
    checksum=hashlib.sha256(compressed).hexdigest(),
    filename=os.path.basename(path),
  )


def verify_local_files(directory: str) -> Dict[str, tfds_checksums.UrlInfo]:
  """Verifies the four files; returns tfds checksums keyed by upstream URL."""
  missing = [n for n in EXPECTED_FILES if not os.path.isfile(os.path.join(directory, n))]
  if missing:
    raise DatasetError(f"dataset 'fashion_mnist': missing {missing} in {directory}. {HOW_TO_GET}")
  return {
    tfds_mnist.FashionMNIST.URL + name: verify_file(os.path.join(directory, name), expected)
    for name, expected in EXPECTED_FILES.items()
  }


def offline_builder_class(url_infos: Dict[str, tfds_checksums.UrlInfo]) -> type:
  """tfds's FashionMNIST builder with `url_infos` as its registered checksums.

  The class is not registered with tfds (it would clash with the stock
  `fashion_mnist`), keeps the stock name and version so it writes the same
  `fashion_mnist/<version>` folder, and changes nothing else.
  """

  class LocalFileFashionMNIST(tfds_mnist.FashionMNIST, skip_registration=True):
    """FashionMNIST whose expected download checksums are the local files'."""

    name = 'fashion_mnist'

  # A plain class attribute shadows tfds's class property, which would read
  # the checksums registered inside the installed tfds package.
  LocalFileFashionMNIST.url_infos = dict(url_infos)
  return LocalFileFashionMNIST


def build_from_local_files(data_dir: Optional[str], directory: str) -> None:
  """Verifies the files in `directory`, prepares `fashion_mnist` in data_dir.

  Raises:
    DatasetError: bad or missing files, or a failed build. A failed build
      leaves no prepared dataset behind (tfds builds in a temporary folder).
  """
  url_infos = verify_local_files(directory)
  builder = offline_builder_class(url_infos)(data_dir=data_dir)
  config = tfds.download.DownloadConfig(
    manual_dir=directory, try_download_gcs=False, force_checksums_validation=True
  )
  # Extracted copies of the .gz files are only needed during the build.
  with tempfile.TemporaryDirectory(prefix='pga_fashion_mnist_') as download_dir:
    try:
      with tfds_quiet.quiet_build('fashion_mnist', builder.data_dir):
        builder.download_and_prepare(download_dir=download_dir, download_config=config)
    except Exception as e:  # tfds raises many types; all mean "build failed".
      if not tfds.builder('fashion_mnist', data_dir=data_dir).is_prepared():
        raise DatasetError(
          f"dataset 'fashion_mnist': preparing it from {directory} into "
          f'{builder.data_dir} failed ({type(e).__name__}: {e}). No dataset '
          'was left there; fix the cause and run again.'
        ) from e
      # Another process (e.g. another host on a shared disk) finished the
      # same build first and its rename won; its result is checked below.
  check_prepared(data_dir)


def check_prepared(data_dir: Optional[str]) -> None:
  """Checks that data_dir holds a complete fashion_mnist (split sizes).

  Raises:
    DatasetError: the prepared dataset is missing or has wrong split sizes.
  """
  builder = tfds.builder('fashion_mnist', data_dir=data_dir)
  found = {
    name: builder.info.splits[name].num_examples
    for name in SPLIT_SIZES
    if name in builder.info.splits
  }
  if not builder.is_prepared() or found != SPLIT_SIZES:
    raise DatasetError(
      f"dataset 'fashion_mnist' in {builder.data_dir} is incomplete (split "
      f'sizes {found}, expected {SPLIT_SIZES}). Delete that folder and run '
      'again.'
    )
