"""Reading and checking config fields by dotted name ('train.lr'), with the
one-line error every check gives: `config.<name>=<value>: expected <what>`.
Used by config_checks.py and by each family's own checks."""


def field(config, name: str):
  """config.<name> for a dotted name such as 'train.lr'."""
  value = config
  for part in name.split('.'):
    value = value[part]
  return value


def require(ok: bool, config, name: str, expected: str) -> None:
  """A ValueError `config.<name>=<value>: expected <expected>` unless ok."""
  if not ok:
    raise ValueError(f'config.{name}={field(config, name)!r}: expected {expected}')


def one_of(config, name: str, options) -> None:
  require(field(config, name) in options, config, name, 'one of ' + ', '.join(options))


def is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def at_least(config, name: str, low, kind: str = 'an integer') -> None:
  """config.<name> is an integer (kind='a number': any number) >= low."""
  value = field(config, name)
  ok = (is_int(value) if kind == 'an integer' else is_number(value)) and value >= low
  require(ok, config, name, f'{kind} >= {low}')
