"""A dataset made of a folder of image files (png, jpg or jpeg, of any size).

Every non-hidden .png, .jpg or .jpeg file under the folder (recursively, in
sorted order, any letter case) is an image of the dataset; other files (notes,
CSVs, ...) and hidden files and folders (names starting with '.') are ignored. Each image is center-cropped to a square and resized to
`image_size` x `image_size` with PIL's bicubic filter. All images must have the
channel count the config asks for (1 for grayscale, 3 for RGB): nothing is
silently converted between grayscale and colour.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import logging
import os
from typing import List, NamedTuple, Optional, Tuple, Union

import numpy as np
from PIL import Image

from pga_jax import storage
from pga_jax.data.errors import DatasetError

_LOG = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')

# PIL mode -> (channel count, mode the pixels are converted to before resizing).
_MODES = {
  '1': (1, 'L'),
  'L': (1, 'L'),
  'LA': (2, 'LA'),
  'RGB': (3, 'RGB'),
  'YCbCr': (3, 'RGB'),
  'RGBA': (4, 'RGBA'),
  'CMYK': (4, 'CMYK'),
}
_OUTPUT_MODES = {1: 'L', 3: 'RGB'}
_SPLIT_FOLDER_NAMES = ('train', 'test', 'validation')


class FolderImages(NamedTuple):
  """Images (N, S, S, C) uint8, the files they came from, and skipped files."""

  images: np.ndarray
  files: List[str]
  skipped: List[Tuple[str, str]]  # (path, reason)


class _BadFile(NamedTuple):
  path: str
  reason: str


def list_image_files(folder: str) -> List[str]:
  """All non-hidden png/jpg/jpeg files under `folder` (local or gs://), recursively, sorted."""
  found = []
  for root, dirs, files in storage.walk(folder):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
    if any(part.startswith('.') for part in root[len(folder) :].split('/')):
      continue  # (remote listings are not pruned by `dirs`)
    found.extend(
      storage.join(root, name)
      for name in files
      if not name.startswith('.') and name.lower().endswith(IMAGE_EXTENSIONS)
    )
  return sorted(found)


def resolve_split_folder(data_dir: str, split: str) -> str:
  """The folder that holds `split`.

  `data_dir/<split>` if that folder exists; otherwise `data_dir` itself, unless
  `data_dir` is organised by split folders (has train/test/validation
  sub-folders) and `split` is not among them.
  """
  candidate = storage.join(data_dir, split)
  if storage.isdir(candidate):
    return candidate
  present = [n for n in _SPLIT_FOLDER_NAMES if storage.isdir(storage.join(data_dir, n))]
  if present:
    raise DatasetError(
      f"dataset 'folder': {data_dir!r} has split folders {present} but no "
      f'{split!r} folder. Create {candidate!r} or choose one of {present}.'
    )
  return data_dir


def mode_channels(image: Image.Image) -> Tuple[int, str]:
  """(channel count, working mode) of a PIL image, from its mode.

  Palette images count as RGB, or RGBA when they carry transparency.

  Raises:
    ValueError: for modes this module does not handle (e.g. 16-bit 'I;16').
  """
  mode = image.mode
  if mode == 'P':
    palette_mode = image.palette.mode if image.palette else 'RGB'
    has_alpha = palette_mode == 'RGBA' or 'transparency' in image.info
    return (4, 'RGBA') if has_alpha else (3, 'RGB')
  if mode not in _MODES:
    raise ValueError(f'unsupported PIL image mode {mode!r}')
  return _MODES[mode]


def center_crop_resize(image: Image.Image, size: int) -> Image.Image:
  """Crops the central square of `image` and resizes it to size x size (bicubic).

  The square's side is min(width, height); its top-left corner is
  ((width - side) // 2, (height - side) // 2).
  """
  width, height = image.size
  side = min(width, height)
  left, top = (width - side) // 2, (height - side) // 2
  square = image.crop((left, top, left + side, top + side))
  return square.resize((size, size), Image.BICUBIC)


def _read_one(path: str, size: int) -> Union[Tuple[Optional[np.ndarray], int], _BadFile]:
  """Decodes, crops and resizes one file; a _BadFile if it is not an image.

  Returns (pixels (size, size, C) uint8, channel count of the file); pixels
  are None when the channel count is neither 1 nor 3 (reported by the caller).
  A gs:// file that cannot be fetched raises StorageError (it is not a bad file).
  """
  source = io.BytesIO(storage.read_bytes(path)) if storage.is_remote(path) else path
  try:
    with Image.open(source) as image:
      image.load()
      channels, working_mode = mode_channels(image)
      if channels not in _OUTPUT_MODES:
        return None, channels
      image = image.convert(working_mode)
      pixels = np.asarray(center_crop_resize(image, size), dtype=np.uint8)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    return _BadFile(path, f'{type(e).__name__}: {e}')
  if pixels.ndim == 2:
    pixels = pixels[:, :, None]
  return pixels, channels


def _channel_error(
  path: str, found: int, wanted: Optional[int], inferred_from: Optional[str]
) -> DatasetError:
  """The error for an image whose channel count is not the wanted one."""
  kinds = {1: 'grayscale (L)', 2: 'grayscale+alpha (LA)', 3: 'RGB', 4: 'RGBA/CMYK'}
  if wanted is None:
    wanted_text = (
      'the channels option is unset and only 1 (grayscale) or 3 (RGB) channels are supported'
    )
  elif inferred_from:
    wanted_text = (
      f'channels={wanted} (unset in the config, so taken from the first image, {inferred_from})'
    )
  else:
    wanted_text = f'the channels option is {wanted}'
  return DatasetError(
    f"dataset 'folder': {path} has {found} channel(s) "
    f'({kinds.get(found, "?")}) but {wanted_text}. Set channels to the '
    'channel count of your images (1 grayscale, 3 RGB) or convert the file.'
  )


def _read_all(paths: List[str], size: int, max_workers: Optional[int]):
  """Yields (path, _read_one(path)) in order, decoding on a thread pool.

  Pending work is cancelled if the consumer stops early (e.g. on an error).
  """
  pool = concurrent.futures.ThreadPoolExecutor(max_workers or os.cpu_count())
  try:
    yield from zip(paths, pool.map(lambda p: _read_one(p, size), paths))
  finally:
    pool.shutdown(wait=True, cancel_futures=True)


def load_folder(
  folder: str,
  image_size: int,
  channels: Optional[int],
  skip_bad_files: bool = False,
  max_workers: Optional[int] = None,
) -> FolderImages:
  """Loads every image under `folder` as uint8 (N, image_size, image_size, C).

  Args:
    folder: directory searched recursively.
    image_size: output side length.
    channels: required channel count (1 or 3); None means "whatever the first
      image has", and then all images must agree with it.
    skip_bad_files: skip (and report) unreadable or non-image files instead of
      failing. Images with the wrong channel count are always an error.
    max_workers: threads decoding images (PIL releases the GIL); default: the
      number of CPUs.

  Raises:
    DatasetError: missing or empty folder, a bad file (unless skipped), a
      channel count that does not match, or no readable image at all.
  """
  if not storage.isdir(folder):
    raise DatasetError(
      f"dataset 'folder': {folder!r} is not a directory. Set data_dir to a "
      'folder of png/jpg images.'
    )
  if channels is not None and channels not in _OUTPUT_MODES:
    raise ValueError(f'channels must be 1 or 3, got {channels}')
  paths = list_image_files(folder)
  if not paths:
    raise DatasetError(
      f"dataset 'folder': no files in {folder!r} (searched recursively for "
      '.png, .jpg and .jpeg; hidden files ignored). Put png/jpg images there.'
    )
  inferred_from = None
  images, files, skipped = [], [], []
  with contextlib.closing(_read_all(paths, image_size, max_workers)) as results:
    for path, result in results:
      if isinstance(result, _BadFile):
        if not skip_bad_files:
          raise DatasetError(
            f"dataset 'folder': cannot read {result.path} as an image "
            f'({result.reason}). Remove the file, or set skip_bad_files=True '
            'to skip unreadable files.'
          )
        skipped.append((result.path, result.reason))
        continue
      pixels, found = result
      if channels is None and found in _OUTPUT_MODES:
        channels, inferred_from = found, path
      if found != channels:
        raise _channel_error(path, found, channels, inferred_from)
      images.append(pixels)
      files.append(path)
  if skipped:
    _LOG.warning(
      "dataset 'folder': skipped %d unreadable file(s) in %s, e.g. %s (%s)",
      len(skipped),
      folder,
      *skipped[0],
    )
  if not images:
    raise DatasetError(
      f"dataset 'folder': none of the {len(paths)} file(s) in {folder!r} is a readable image."
    )
  return FolderImages(np.stack(images), files, skipped)
