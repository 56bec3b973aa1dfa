"""Imports the PyTorch reference (torch, torchvision, pytorch-fid) for the FID tests.

The torchvision wheel matching torch 2.13.0 on PyPI is a CUDA build; with the
CPU torch its C++ ops library cannot load, and then
``torchvision/_meta_registrations.py`` fails at import time (it registers fake
kernels for the missing ``torchvision::nms`` etc. ops). pytorch-fid only needs
pure-Python parts (``models.inception``, ``transforms``), so in that case only
that one module is replaced by an empty one. torch itself must import: a
missing torch is an error, never a skip.
"""

import sys
import types

import torch  # noqa: F401  (must error, not skip, when missing)


def import_torchvision():
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


import_torchvision()
