"""tfds's own console output (prints and progress bars) during a build, sent to the log.

tfds prints "Downloading and preparing dataset ..." and draws progress bars on
stdout/stderr whatever the logging setup. While a dataset is prepared, these
go to the log (the `pga_detail.tfds` logger: the workdir's pga.log, or the
console with --verbosity); the project logs one line of its own instead.
"""

from __future__ import annotations

import contextlib
import io
import logging

_LOG = logging.getLogger(__name__)
_DETAIL = logging.getLogger('pga_detail.tfds')


class _LogLines(io.TextIOBase):
  """A text stream whose complete lines become log records."""

  def __init__(self):
    super().__init__()
    self._pending = ''

  def writable(self) -> bool:
    return True

  def write(self, text: str) -> int:
    self._pending += text.replace('\r', '\n')
    *lines, self._pending = self._pending.split('\n')
    for line in lines:
      if line.strip():
        _DETAIL.info('%s', line.rstrip())
    return len(text)

  def flush(self) -> None:
    pass


@contextlib.contextmanager
def quiet_build(dataset: str, where: str):
  """Announces the build in one project line; tfds's output meanwhile goes to the log."""
  _LOG.info('Preparing dataset %r in %s (once; later runs read it from there).', dataset, where)
  stream = _LogLines()
  with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
    yield
  stream.write('\n')
