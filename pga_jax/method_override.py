"""`--config.method=M` on the command line: the run gets method M's own defaults.

A config file is written for one method (e.g. quickstart.py for LPGA). When the
command line changes the method, every field whose default differs between
the file's method and M (latent size, coefficients, warm-up: the fields in
either method's `methods.Method.defaults`) takes M's default, unless the
command line sets it too. A field the config file set to a value of its own
is not guessed at: the run is refused, naming the field and the flag that
decides it.

To know what the file set, `apply` needs the config as the file made it;
absl's config flag applies the overrides while it parses and keeps no copy,
so the command line executes the config file a second time (`cli`).
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


def method_fields(names=config_lib.METHOD_NAMES, code_dir=None) -> Dict[str, Dict[str, object]]:
  """{field: {method: default}} for the fields whose default differs between
  the methods `names` (by default the project's)."""
  table = {}
  for field in config_fields.FIELDS:
    if field.name == 'method':
      continue
    values = {m: field.default_for(m, code_dir) for m in names}
    if len({repr(v) for v in values.values()}) > 1:
      table[field.name] = values
  own = {m: config_lib.methods.defaults(m, code_dir) for m in names}
  for name in sorted(set().union(*own.values()) - set(config_fields.BY_NAME)):
    table[name] = {m: own[m].get(name) for m in names}  # None: the method has no such field
  return table


def _set(config, field: str, value) -> None:
  *parents, leaf = field.split('.')
  for parent in parents:
    config = config[parent]
  with config.unlocked():  # a method's own field is new to a config made for another method
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
  if old == new:
    return {}
  try:
    table = method_fields((old, new), config_fields.get(config, 'code_dir'))
  except ValueError:
    return {}  # an unknown method: config.validate names it
  from_file = _flat(file_config)
  changed, conflicts = {}, []
  for field, defaults in table.items():
    if field not in from_file and field not in config_fields.BY_NAME:
      if defaults[new] is not None and field not in overrides:  # the new method's own field
        _set(config, field, defaults[new])
        changed[field] = defaults[new]
      continue
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
