"""The PyTorch reference (torch, torchvision, pytorch-fid) of the FID tests,
imported at first use.

Importing torch and torchvision takes about 4 s, and every pytest worker
imports every test module to collect it. A test module names each of these
modules as a `Deferred`, which imports it at its first attribute access. Whether
they are installed is checked here, when a test module is collected
(`importlib.util.find_spec`, which imports nothing): a missing install makes
the module ERROR, never skip.

The torchvision wheel matching torch 2.13.0 on PyPI is a CUDA build; with the
CPU torch its C++ ops library cannot load, and then
``torchvision/_meta_registrations.py`` fails at import time (it registers fake
kernels for the missing ``torchvision::nms`` etc. ops). pytorch-fid only needs
pure-Python parts (``models.inception``, ``transforms``), so in that case only
that one module is replaced by an empty one.
"""

import importlib
import importlib.util
import sys
import types

for _name in ('torch', 'torchvision', 'pytorch_fid'):
  if importlib.util.find_spec(_name) is None:
    raise ImportError(
      f'{_name} is not installed; the FID tests need it: pip install -r requirements-test.txt'
    )


def import_torchvision():
  """Imports torchvision (once), replacing its fake-kernel registrations if they fail."""
  if 'torchvision' in sys.modules:
    return
  try:
    import torchvision  # noqa: F401
  except RuntimeError as e:
    if 'torchvision::' not in str(e):
      raise
    for name in list(sys.modules):
      if name == 'torchvision' or name.startswith('torchvision.'):
        del sys.modules[name]
    stub = 'torchvision._meta_registrations'
    sys.modules[stub] = types.ModuleType(stub)
    import torchvision  # noqa: F401


class Deferred:
  """The module `name`, imported (after torchvision) at the first attribute asked for."""

  def __init__(self, name: str):
    self._name = name

  def _module(self) -> types.ModuleType:
    """The module itself (e.g. for monkeypatching one of its attributes)."""
    import_torchvision()
    return importlib.import_module(self._name)

  def __getattr__(self, attribute: str):
    if attribute.startswith('_'):  # what pytest asks of every object while collecting
      raise AttributeError(attribute)
    return getattr(self._module(), attribute)
