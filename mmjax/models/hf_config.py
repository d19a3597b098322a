"""Reading the config.json of a Hugging Face checkpoint directory into our config dataclasses."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Sequence, Type, TypeVar

__all__ = ["read_config_json", "read_dataclass_config"]

Config = TypeVar("Config")


def read_config_json(path: str, written_by: str) -> tuple[str, dict]:
  """(file, values) of `<path>/config.json`; FileNotFoundError naming the file and what should
  have written it (`written_by`, e.g. "transformers' CLIPModel.save_pretrained")."""
  config_file = os.path.join(path, "config.json")
  if not os.path.isfile(config_file):
    raise FileNotFoundError(f"{config_file} not found: expected a directory written by "
                            f"{written_by}")
  with open(config_file, encoding="utf-8") as f:
    return config_file, json.load(f)


def read_dataclass_config(path: str, config_class: Type[Config], model_types: Sequence[Any],
                          written_by: str, renames: Mapping[str, str] | None = None) -> Config:
  """`config_class` from `<path>/config.json`: its model_type must be one of `model_types` (None
  allows a file without one; ValueError naming the file otherwise); keys in `renames` are read
  under their new names; keys the dataclass lacks are ignored."""
  config_file, values = read_config_json(path, written_by)
  if values.get("model_type") not in model_types:
    raise ValueError(f"{config_file}: model_type {values.get('model_type')!r}, expected "
                     f"{' or '.join(repr(t) for t in model_types if t is not None)}")
  for old, new in (renames or {}).items():
    if old in values:
      values[new] = values[old]
  fields = {f.name for f in dataclasses.fields(config_class)}
  return config_class(**{k: v for k, v in values.items() if k in fields})
