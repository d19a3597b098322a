"""Export of trained CLIP tasks (configs/clip_pretrain.py, configs/emovclip.py) to the Hugging
Face CLIP format, so mmjax.models.clip.from_pretrained and transformers' CLIPModel load them."""

import os
import shutil

import jax
from jax.experimental import multihost_utils

from mmjax.models import clip
from mmjax.models.clip import adapter
from mmjax.train.trainer import restore_for_eval, setup_logging


def export_checkpoint(config, workdir: str, output: str, step="latest") -> int:
  """Writes a trained CLIP task's checkpoint ('latest', 'best' or a step number) as a Hugging
  Face directory (config.json + model.safetensors, plus the tokenizer files of model.checkpoint
  if it has them) that mmjax.models.clip.from_pretrained and transformers' CLIPModel load.
  Prompts are not part of that format and are not exported. Returns the exported step.

  On several processes every one must call it: the parameters, sharded over the devices of all
  hosts, are gathered in full onto each, process 0 writes `output` and the others wait for it.
  """
  setup_logging()
  task, state, _, _, step = restore_for_eval(config, workdir, step)
  if not isinstance(getattr(task, "model", None), adapter.CheckpointModel):
    raise ValueError(f"config.task={config.task!r} is not a CLIP task; nothing to export")
  # numpy; a collective, so on every process (device_get fails on other hosts' shards).
  params = multihost_utils.process_allgather(state.params, tiled=True)
  if jax.process_index() == 0:
    clip.save_pretrained(params, task.clip.config, output)
    for name in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
      source = os.path.join(config.model.checkpoint, name) if config.model.checkpoint else ""
      if source and os.path.isfile(source):
        shutil.copyfile(source, os.path.join(output, name))
  multihost_utils.sync_global_devices(f"mmjax_export_{step}")
  return step
