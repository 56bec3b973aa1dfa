"""What the `pga` command shows on the console, and where the rest goes.

The console gets the project's own lines: pga_jax's log records (progress,
per-term losses, warnings, errors) and the `pga:` lines the commands print.
Everything the libraries log (orbax's options and file operations, tfds,
TensorFlow's native start-up lines, tracebacks of background threads) goes to
a log file instead, in the run's workdir when there is one. `--verbosity=N`
(or `-v N`) puts all of it back on the console.
"""

from __future__ import annotations

import contextlib
import logging as std_logging
import os
import sys
import tempfile
import threading
from typing import Optional, Sequence

LOG_FILE = 'pga.log'
# Records of this logger (and its children) are detail: the log file only.
DETAIL_LOGGER = 'pga_detail'
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)).replace(os.sep, '/') + '/'


def verbose_requested(argv: Sequence[str]) -> bool:
  """True if the command line sets absl's --verbosity (or -v): libraries' detail wanted."""
  return any(a == '-v' or a.startswith(('-v=', '--verbosity', '--v=')) for a in argv)


def detail_logger(name: str = '') -> std_logging.Logger:
  """A logger whose records go to the log file only (unless --verbosity)."""
  return std_logging.getLogger(f'{DETAIL_LOGGER}.{name}' if name else DETAIL_LOGGER)


def is_project_record(record: std_logging.LogRecord) -> bool:
  """pga_jax's records (but not its detail logger's) and the experiments'."""
  if record.name.startswith(DETAIL_LOGGER):
    return False
  path = record.pathname.replace(os.sep, '/')
  # By the package's own folder: a checkout named pga_jax holds .venv (gcsfs, orbax, ...) too.
  if path.startswith(_PACKAGE_DIR):
    return True
  if '/site-packages/' in path or '/dist-packages/' in path:
    return False
  return '/pga_jax/' in path or '/experiments/' in path


class ProjectOnly(std_logging.Filter):
  """Console filter: only the project's records (see `is_project_record`)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return is_project_record(record)


class _LazyFileHandler(std_logging.FileHandler):
  """Appends to a file opened at the first record; never reports its own failures."""

  def __init__(self, path: str):
    super().__init__(path, mode='a', delay=True)

  def _open(self):
    os.makedirs(os.path.dirname(self.baseFilename), exist_ok=True)
    return super()._open()

  def handleError(self, record):  # A log file we cannot write must not break the run.
    del record


def log_path(workdir: Optional[str], command: str) -> str:
  """<workdir>/pga.log if the workdir exists and is writable, else one in the temp dir.

  A gs:// workdir gets the one in the local temp dir (the log is appended to
  line by line, which an object store cannot do; it is not uploaded).
  """
  if workdir and str(workdir).startswith('gs://'):
    return os.path.join(tempfile.gettempdir(), 'pga_jax', f'{command}.log')
  if workdir and os.path.isdir(workdir) and os.access(workdir, os.W_OK):
    probe = os.path.join(workdir, LOG_FILE)
    if not os.path.exists(probe) or os.access(probe, os.W_OK):
      return os.path.abspath(probe)
  return os.path.join(tempfile.gettempdir(), 'pga_jax', f'{command}.log')


def _log_thread_exception(args) -> None:
  """threading.excepthook: a background thread's traceback goes to the log, not the console."""
  detail_logger('threads').error(
    'Exception in thread %s',
    getattr(args.thread, 'name', '?'),
    exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
  )


def _log_exception(exc_type, exc_value, exc_traceback) -> None:
  """sys.excepthook: native libraries (TensorStore's callbacks) print their Python errors here."""
  detail_logger('native').error('Uncaught exception', exc_info=(exc_type, exc_value, exc_traceback))


def _log_unraisable(unraisable) -> None:
  detail_logger('unraisable').error(
    'Exception ignored in %r: %s',
    unraisable.object,
    unraisable.err_msg or '',
    exc_info=(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback),
  )


def route_logs(path: str, verbose: bool) -> None:
  """Console: the project's lines (all lines if verbose). The log file at `path`: everything."""
  from absl import logging  # pylint: disable=g-import-not-at-top

  file_handler = _LazyFileHandler(path)
  file_handler.setFormatter(logging.PythonFormatter())
  std_logging.getLogger().addHandler(file_handler)
  std_logging.captureWarnings(True)
  if not verbose:
    logging.get_absl_handler().addFilter(ProjectOnly())
    threading.excepthook = _log_thread_exception
    sys.excepthook = _log_exception
    sys.unraisablehook = _log_unraisable


def routed_log_file() -> Optional[str]:
  """The log file `route_logs` sends the libraries' lines to, while the console
  shows the project's only; None otherwise (--verbosity, or no `pga` command)."""
  from absl import logging  # pylint: disable=g-import-not-at-top

  if not any(isinstance(f, ProjectOnly) for f in logging.get_absl_handler().filters):
    return None
  for handler in std_logging.getLogger().handlers:
    if isinstance(handler, _LazyFileHandler):
      return handler.baseFilename
  return None


@contextlib.contextmanager
def native_stderr_to(path: Optional[str]):
  """Sends file descriptor 2 (C++ logging, e.g. TensorFlow's at import) to `path` meanwhile."""
  if path is None:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  except OSError:
    target = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(target, 2)
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    os.close(target)
