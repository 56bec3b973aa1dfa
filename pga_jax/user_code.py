"""Researchers' own code, named in a config as 'module:name'.

A config can name a loss term (`config.extra_terms`) or a whole method
(`config.method`) that lives in the researcher's own file. `import_named`
finds 'module:name' the way Python would (an installed package, PYTHONPATH)
and, failing that, as `module.py` (or a package folder `module/`) in the
working directory or in `config.code_dir`, which `pga train` sets to the
config file's folder. So a file next to the config file, or in the folder the
command runs in, is found without PYTHONPATH, also later when the stored run
is sampled or evaluated.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any, Optional, Sequence


def is_named(text) -> bool:
  """True for a 'module:name' string (a user's object), False for a plain name."""
  return isinstance(text, str) and ':' in text


def search_dirs(code_dir: Optional[str]) -> tuple:
  """The folders looked in after Python's own path: the working directory, then code_dir."""
  dirs = [os.getcwd()]
  if code_dir and os.path.abspath(code_dir) not in dirs:
    dirs.append(os.path.abspath(code_dir))
  return tuple(dirs)


def _module_file(module_name: str, dirs: Sequence[str]) -> Optional[str]:
  top, *rest = module_name.split('.')
  for folder in dirs:
    for candidate in (
      os.path.join(folder, *([top] + rest)) + '.py',
      os.path.join(folder, top, *rest, '__init__.py'),
    ):
      if os.path.isfile(candidate):
        return candidate
  return None


def import_module(module_name: str, dirs: Sequence[str] = ()):
  """The module `module_name`, from Python's path or else from a file in `dirs`.

  A module loaded from a file is registered in `sys.modules` under its name,
  as an import would, so it is loaded once per process.
  """
  if module_name in sys.modules:
    return sys.modules[module_name]
  try:
    return importlib.import_module(module_name)
  except ModuleNotFoundError as err:
    if err.name != module_name.split('.')[0] and err.name != module_name:
      raise  # the module exists but something it imports is missing
  path = _module_file(module_name, dirs)
  if path is None:
    looked = ', '.join(dirs) or 'nowhere else'
    raise ModuleNotFoundError(
      f'no module named {module_name!r} on the Python path, nor {module_name}.py in {looked}; '
      'put the file in the working directory or next to the config file, or add its folder '
      'to PYTHONPATH',
      name=module_name,
    )
  spec = importlib.util.spec_from_file_location(module_name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[module_name] = module
  try:
    spec.loader.exec_module(module)
  except BaseException:
    del sys.modules[module_name]
    raise
  return module


def import_named(text: str, code_dir: Optional[str] = None, what: str = 'object') -> Any:
  """The object 'module:name' names (`what` words the errors, e.g. 'term')."""
  module_name, _, attr = text.partition(':') if isinstance(text, str) else ('', '', '')
  if not module_name or not attr:
    raise ValueError(f"{what} {text!r}: name it as 'module:name', e.g. 'my_terms:l1_rec'")
  try:
    module = import_module(module_name, search_dirs(code_dir))
  except ImportError as err:
    raise ValueError(f'{what} {text!r}: cannot import {module_name!r}: {err}') from err
  try:
    return getattr(module, attr)
  except AttributeError:
    raise ValueError(
      f'{what} {text!r}: module {module_name!r} ({getattr(module, "__file__", "?")}) '
      f'has no {attr!r}'
    ) from None
