"""`--config.method=M` on the command line: the run gets method M's reference settings.

A config file is written for one method (e.g. quickstart.py for LPGA). When the
command line changes the method, every field whose reference default differs
between methods (latent size, coefficients, warm-up, optimizer: the fields with
`per_method` defaults in `config_fields.FIELDS`) takes M's default, unless the command line sets it too.
A field the config file set to a value of its own is not guessed at: the run
is refused, naming the field and the flag that decides it.
"""

from __future__ import annotations

from typing import Dict, Mapping

from pga_jax import config as config_lib, config_fields


def _flat(config, prefix: str = '') -> Dict[str, object]:
  """{'a.b': value} for every leaf of a ConfigDict (or dict)."""
  flat = {}
  for key, value in config.items():
    if hasattr(value, 'items'):
      flat.update(_flat(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def method_fields() -> Dict[str, Dict[str, object]]:
  """{field: {method: reference default}} for the fields whose default depends on the method."""
  return {
    f.name: {m: f.default_for(m) for m in config_lib.METHOD_NAMES}
    for f in config_fields.FIELDS
    if f.per_method
  }


def _set(config, field: str, value) -> None:
  *parents, leaf = field.split('.')
  for parent in parents:
    config = config[parent]
  config[leaf] = value


def apply(config, file_config, overrides: Mapping[str, object]) -> Dict[str, object]:
  """Gives `config` the reference defaults of its method where the user did not choose.

  config: the config after the command-line overrides (changed in place).
  file_config: the config as the config file made it (no overrides).
  overrides: {field: value} set on the command line.

  Returns {field: new value} of the fields changed. Raises ConfigError naming
  the fields the config file set for its own method, which the command line
  must decide.
  """
  old, new = file_config.method, config.method
  if old == new or new not in config_lib.METHOD_NAMES or old not in config_lib.METHOD_NAMES:
    return {}
  from_file = _flat(file_config)
  changed, conflicts = {}, []
  for field, defaults in method_fields().items():
    if field in overrides or field not in from_file:
      continue
    value = from_file[field]
    if value == defaults[new]:
      continue
    if value == defaults[old]:
      _set(config, field, defaults[new])
      changed[field] = defaults[new]
    else:
      conflicts.append(f'{field}={value!r} ({old}: {defaults[old]!r}, {new}: {defaults[new]!r})')
  if conflicts:
    flags = ' '.join(f'--config.{c.split("=")[0]}=VALUE' for c in conflicts)
    raise config_lib.ConfigError(
      f'config.method: the config file is for {old} and sets {"; ".join(conflicts)}; '
      f'with --config.method={new}, choose: {flags}'
    )
  return changed
