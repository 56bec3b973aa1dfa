"""Local paths and gs:// URLs behind one small API.

The files of a run directory (config.json, figures, evaluation JSON,
TensorBoard events, `--out` files) and of the `idx`/`folder` datasets go
through this module: local paths through `os` and `open`, `gs://` URLs
through fsspec's gcsfs. (Caches such as the evaluation classifiers and
--inception_weights stay local paths.) Orbax writes
checkpoint arrays with TensorStore's own GCS driver and does its directory
bookkeeping (steps, commit_success.txt markers, deletions) through
etils.epath; tfds also uses etils.epath.

`configure_environment()` (the first thing the `pga` command does) makes all
of them use the same storage:

* always: `EPATH_USE_TF=false`, so etils.epath uses gcsfs for gs:// instead of
  TensorFlow's GCS filesystem. TensorFlow's (2.21) cannot be pointed at
  another endpoint: it always calls https://www.googleapis.com and ignores
  STORAGE_EMULATOR_HOST. `GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false` keeps
  gcsfs on the plain JSON API (its experimental layer makes a gRPC call per
  bucket). The listings cache is off: TensorStore writes objects that gcsfs
  would not know about.
* when `STORAGE_EMULATOR_HOST` is set (Google's convention for a storage
  emulator, e.g. `http://127.0.0.1:4443`): gcsfs follows it by itself;
  TensorStore gets it as `TENSORSTORE_GCS_HTTP_URL`; both are told to use no
  credentials (`FSSPEC_GS_TOKEN=anon`, and a placeholder
  `GOOGLE_AUTH_TOKEN_FOR_TESTING` for TensorStore), so nothing looks for
  Google credentials or a metadata server.

Variables already set are left alone. TensorFlow itself (tf.summary, tf.data)
never sees a gs:// path: TensorBoard events are written locally and uploaded
(`pga_jax.event_logs`), tfds data on gs:// is copied to a local temporary
directory first (`local_copy`).
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import os
import tempfile
import uuid
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Tuple

REMOTE_PREFIXES = ('gs://',)
EMULATOR_VARIABLE = 'STORAGE_EMULATOR_HOST'
EMULATOR_TOKEN = 'emulator-no-auth'


class StorageError(OSError):
  """A remote path cannot be used; the message names it and says what to do."""


def is_remote(path) -> bool:
  """Whether `path` is a gs:// URL (anything else is a local path)."""
  return str(path).startswith(REMOTE_PREFIXES)


def emulator_url(environ: Mapping[str, str]) -> Optional[str]:
  """The emulator endpoint of STORAGE_EMULATOR_HOST as a URL, or None."""
  host = environ.get(EMULATOR_VARIABLE, '').strip().rstrip('/')
  if not host or host == 'default':
    return None
  return host if host.startswith(('http://', 'https://')) else f'http://{host}'


def environment_settings(environ: Mapping[str, str]) -> Dict[str, str]:
  """The variables `configure_environment` sets, for the given environment."""
  settings = {
    'EPATH_USE_TF': 'false',
    'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false',
    'FSSPEC_GS_USE_LISTINGS_CACHE': 'false',
  }
  url = emulator_url(environ)
  if url:
    settings.update(
      {
        'TENSORSTORE_GCS_HTTP_URL': url,
        'GOOGLE_AUTH_TOKEN_FOR_TESTING': EMULATOR_TOKEN,
        'FSSPEC_GS_TOKEN': 'anon',
      }
    )
  return {k: v for k, v in settings.items() if k not in environ}


def configure_environment(environ=None) -> Dict[str, str]:
  """Sets the variables of `environment_settings` that are not set; returns them.

  Must run before fsspec, etils.epath or TensorStore are first used (they
  read these variables once).
  """
  environ = os.environ if environ is None else environ
  settings = environment_settings(environ)
  environ.update(settings)
  return settings


def _fs(path: str):
  """(fsspec filesystem, path without the protocol) of a remote path."""
  import fsspec  # pylint: disable=g-import-not-at-top

  return fsspec.core.url_to_fs(path)


def _url(fs, path: str) -> str:
  return fs.unstrip_protocol(path)


def describe(err: BaseException) -> str:
  """The first line of an error, shortened."""
  text = (str(err).strip().splitlines() or [''])[0]
  text = text if len(text) <= 200 else f'{text[:100]} ... {text[-95:]}'
  return f'{type(err).__name__}: {text}' if text else type(err).__name__


@contextlib.contextmanager
def _remote_errors(path: str) -> Iterator[None]:
  """Turns the many exception types of gcsfs/aiohttp/google-auth into StorageError."""
  try:
    yield
  except (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError):
    raise
  except StorageError:
    raise
  except Exception as err:  # pylint: disable=broad-except
    raise StorageError(f'{path}: {describe(err)}') from err


def join(path: str, *parts: str) -> str:
  if is_remote(path):
    return '/'.join([str(path).rstrip('/')] + [p.strip('/') for p in parts])
  return os.path.join(path, *parts)


def absolute(path: str) -> str:
  """os.path.abspath for local paths; gs:// URLs unchanged."""
  return str(path) if is_remote(path) else os.path.abspath(path)


def dirname(path: str) -> str:
  if is_remote(path):
    return str(path).rstrip('/').rsplit('/', 1)[0]
  return os.path.dirname(os.path.abspath(path))


def _either(path: str, local: Callable, remote: str, *args):
  """`local(path, *args)` for a local path; for a gs:// URL the fsspec method named
  `remote` on it, with its errors as StorageError (`_remote_errors`)."""
  if not is_remote(path):
    return local(path, *args)
  with _remote_errors(path):
    fs, p = _fs(path)
    return getattr(fs, remote)(p, *args)


def exists(path: str) -> bool:
  return _either(path, os.path.exists, 'exists')


def isdir(path: str) -> bool:
  return _either(path, os.path.isdir, 'isdir')


def isfile(path: str) -> bool:
  return _either(path, os.path.isfile, 'isfile')


def walk(path: str) -> Iterator[Tuple[str, List[str], List[str]]]:
  """os.walk for both (remote roots are yielded as gs:// URLs)."""
  if not is_remote(path):
    yield from os.walk(path)
    return
  with _remote_errors(path):
    fs, p = _fs(path)
    entries = list(fs.walk(p))
  for root, dirs, files in entries:
    yield _url(fs, root), dirs, files


def makedirs(path: str) -> None:
  """os.makedirs(exist_ok=True); nothing for gs:// (objects need no folders)."""
  if not is_remote(path):
    os.makedirs(path, exist_ok=True)


def open(path: str, mode: str = 'r'):  # pylint: disable=redefined-builtin
  """A file object; remote files are uploaded whole when closed."""
  return _either(path, builtins.open, 'open', mode)


def sha256(path: str) -> str:
  """Hex sha256 of a file's bytes (read in 4 MiB blocks)."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 22), b''):
      digest.update(block)
  return digest.hexdigest()


def read_bytes(path: str) -> bytes:
  with open(path, 'rb') as f:
    return f.read()


def write_atomic(path: str, data) -> str:
  """Writes `data` (str or bytes) so that readers see the old file or the new one.

  Local: a unique temporary file in the same folder, then os.replace. gs://:
  an upload, which GCS makes visible only when it is complete.
  """
  mode = 'w' if isinstance(data, str) else 'wb'
  if is_remote(path):
    with _remote_errors(path):
      with open(path, mode) as f:
        f.write(data)
    return path
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=directory)
  try:
    with os.fdopen(fd, mode) as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise
  return path


def move(source: str, target: str) -> None:
  """Moves a file or directory (gs://: copies everything, then deletes the source)."""
  if not is_remote(source) and not is_remote(target):
    os.replace(source, target)
    return
  if not (is_remote(source) and is_remote(target)):
    raise ValueError(f'cannot move between local and remote storage: {source} -> {target}')
  with _remote_errors(source):
    fs, src = _fs(source)
    _, dst = _fs(target)
    if fs.isdir(src):
      for name in fs.find(src):
        fs.copy(name, dst + name[len(src.rstrip('/')) :])
      fs.rm(src, recursive=True)
    else:
      fs.copy(src, dst)
      fs.rm(src)


def upload(local_path: str, remote_path: str) -> None:
  with _remote_errors(remote_path):
    fs, p = _fs(remote_path)
    fs.put_file(local_path, p)


def check_writable(path: str, what: str = 'workdir', fix: Optional[str] = None) -> None:
  """Creates the folder `path` if needed, then writes and deletes a probe file in it.

  The one writability check of the package: every output (workdir, --json,
  --out, TensorBoard logs) is checked with it before any work. Raises
  StorageError, one line naming `what` and `path`, why, and what to do: `fix`
  (default: choose another --`what`) for a local path; for gs://, what to
  check about the bucket, the credentials and the network. For gs:// the
  probe is one upload and one delete, so a missing bucket, missing permission
  or no network shows here.
  """
  probe = join(path, f'.write_test.{uuid.uuid4().hex}')
  try:
    makedirs(path)
    with open(probe, 'wb') as f:
      f.write(b'')
    _either(probe, os.remove, 'rm')
  except OSError as err:
    if not is_remote(path):
      raise StorageError(
        f'cannot write to {what} {path!r} ({err.strerror or describe(err)}); '
        f'{fix or f"choose a --{what} you can write to"}'
      ) from err
    cause = err.__cause__ if isinstance(err, StorageError) and err.__cause__ else err
    lines = str(cause).strip().splitlines() or ['']
    if isinstance(err, FileNotFoundError):
      reason = f'bucket {bucket(path)!r} does not exist'
    elif isinstance(cause, PermissionError) or lines[0].startswith('Forbidden'):
      reason = f'permission denied on bucket {bucket(path)!r}: {lines[-1].strip()[:200]}'
    else:
      reason = describe(cause)
    raise StorageError(
      f'cannot write to {what} {path} ({reason}); check the bucket name, that your '
      'credentials may write to it (`gcloud auth application-default login` or a '
      f'service account) and the network, or set {EMULATOR_VARIABLE} for an emulator'
    ) from err


def write_json(path: str, value, indent: int = 2, default: Callable = float) -> str:
  """Writes `value` as JSON (sorted keys, a final newline) with `write_atomic`;
  returns the path. `default` converts what json cannot (numpy scalars)."""
  return write_atomic(
    path, json.dumps(value, indent=indent, sort_keys=True, default=default) + '\n'
  )


def bucket(path: str) -> str:
  """The bucket of a gs:// URL."""
  return str(path).split('://', 1)[1].split('/', 1)[0]


@contextlib.contextmanager
def local_copy(root: str, subdir: str = '') -> Iterator[str]:
  """A local directory holding `root/subdir`: `root` itself if local, else a temporary copy.

  Only `root/subdir` (everything under `root` if empty) is copied, to the
  same relative place; the copy is deleted on exit.
  """
  if not is_remote(root):
    yield root
    return
  source = join(root, subdir) if subdir else root
  with tempfile.TemporaryDirectory(prefix='pga_data_') as tmp:
    with _remote_errors(source):
      fs, base = _fs(root)
      base = base.rstrip('/')
      _, p = _fs(source)
      for name in fs.find(p):
        target = os.path.join(tmp, *name[len(base) :].strip('/').split('/'))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fs.get_file(name, target)
    yield tmp
