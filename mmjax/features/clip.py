"""CLIP image embeddings of sampled video frames, as MERTools features: our Flax CLIP
(mmjax.models.clip) from a Hugging Face checkpoint, or the prompt-tuned image tower of a trained
EmoVCLIP run (mmjax/projects/emovclip).

Input: each sample's frames in `input_dir` as mmjax.data.labelled_video.find_frames reads them,
`<name>.npy` (uint8 [T, H, W, 3] RGB) or a directory `<name>/` of image files (sorted by name).
F = `num_frames` frames are sampled evenly (labelled_video.sample_frame_indices: the centres of
F equal segments, repeated when the clip has fewer than F) and CLIP-preprocessed
(mmjax.data.images: shorter side to S bicubic, centre crop S x S, CLIP mean/std).

Output (mmjax.data.mertools_layout), e = visual_projection(post_layernorm(class token)) per
frame (Clip.encode_image's 'embeds' = transformers' get_image_features; not L2-normalised):
  <root>/<name>-FRA/<sample>.npy   float32 [F, P]  e of each sampled frame, in time order
  <root>/<name>-UTT/<sample>.npy   float32 [P]     mean over the F frames = Clip.encode_video,
                                                   EmoVCLIP's video embedding
The models:
  `from_checkpoint(dir)`: a Hugging Face CLIP directory (config.json + model.safetensors).
  `from_emovclip_workdir(workdir, step)`: a `launch/train.py --config=configs/emovclip.py` run:
    the architecture from its config snapshot (<workdir>/config.json: config.model's preset or
    checkpoint, num_prompts, prompt_depth), the weights, learned prompts included, from its
    checkpoint `step` ('latest', 'best' or a number). With prompts, every frame goes through the
    prompted image tower, as in EmoVCLIP's training (the MER2024 system's "EmoVCLIP video
    features").
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Sequence, Tuple

import jax
import numpy as np

from mmjax.data import labelled_video
from mmjax.data.mertools_layout import LEVELS
from mmjax.features.runner import Output, check_levels
from mmjax.models import clip
from mmjax.models.clip import adapter
from mmjax.train import snapshot
from mmjax.train.checkpoint import CheckpointReader, flat_paths

__all__ = ["ClipFrameFeatures", "from_checkpoint", "from_emovclip_workdir"]

EMOVCLIP_TASK = "emovclip"


def from_checkpoint(path: str) -> Tuple[clip.Clip, Dict[str, Any]]:
  """(model, float32 variables) of a Hugging Face CLIP directory (float16 and bfloat16
  checkpoints are cast)."""
  model, variables = clip.from_pretrained(path)
  return model, jax.tree.map(lambda a: np.asarray(a, np.float32), variables)


def _check_like(params, template, source: str) -> None:
  """ValueError naming `source` when `params` and `template` differ in paths or shapes."""
  have = {path: np.shape(leaf) for path, leaf in flat_paths(params).items()}
  want = {path: tuple(leaf.shape) for path, leaf in flat_paths(template).items()}
  problems = [f"missing {path}" for path in sorted(set(want) - set(have))]
  problems += [f"unexpected {path}" for path in sorted(set(have) - set(want))]
  problems += [f"{path}: {have[path]}, the config's model has {want[path]}"
               for path in sorted(set(have) & set(want)) if have[path] != want[path]]
  if problems:
    raise ValueError(f"{source} does not match the run's CLIP config: {'; '.join(problems[:8])}")


def from_emovclip_workdir(workdir: str, step="latest") -> Tuple[clip.Clip, Dict[str, Any], int]:
  """(prompted model, variables, step) of a trained EmoVCLIP run (module docstring). Errors
  name the snapshot file, the config key or the checkpoint directory at fault."""
  config = snapshot.read(workdir)
  source = snapshot.path(workdir)
  if config.task != EMOVCLIP_TASK:
    raise ValueError(f"{source}: config.task={config.task!r}; expected an {EMOVCLIP_TASK!r} run "
                     "(launch/train.py --config=configs/emovclip.py)")
  try:
    module = adapter.build_clip(config.model)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"{source}: config.model.checkpoint={config.model.checkpoint!r}, the "
                            f"run's CLIP architecture, cannot be read: {e}") from e
  reader = CheckpointReader(os.path.join(workdir, "checkpoints"))
  step = reader.resolve_step(step)
  params = reader.read_arrays(step, keys=("params",))["params"]
  _check_like(params, clip.abstract_params(module)["params"],
              f"{reader.directory}/{step} (params)")
  return module, {"params": params}, step


class ClipFrameFeatures:
  """The CLIP frame extractor (module docstring; mmjax.features.runner.Extractor).

  Args:
    model: the Clip module (with or without prompts).
    variables: its variables {'params': ...}.
    input_dir: the frames directory.
    name: the extractor name, e.g. 'clip-vit-large-patch14' or 'emovclip'.
    levels: 'UTT' and/or 'FRA'.
    num_frames: F, frames sampled per sample.
  """

  def __init__(self, model: clip.Clip, variables, input_dir: str, *, name: str,
               levels: Sequence[str] = LEVELS, num_frames: int = 8):
    if num_frames < 1:
      raise ValueError(f"--num_frames={num_frames} must be >= 1")
    self.model, self.variables, self.input_dir = model, variables, input_dir
    self.name, self.levels, self.num_frames = name, check_levels(levels), int(num_frames)
    self.image_size = model.config.vision.image_size
    self.outputs: List[Output] = [(name, level) for level in self.levels]

  def order(self, names: Sequence[str]) -> List[str]:
    """The names as given, after checking that every sample has frames."""
    for name in names:
      labelled_video.find_frames(self.input_dir, name)
    return list(names)

  def load(self, name: str) -> np.ndarray:
    """float32 [F, S, S, 3], the sampled, preprocessed frames."""
    return labelled_video.load_clip(labelled_video.find_frames(self.input_dir, name),
                                    self.num_frames, self.image_size)

  def collate(self, examples: Sequence[np.ndarray], rows: int) -> Dict[str, np.ndarray]:
    """{'pixel_values': float32 [rows, F, S, S, 3]}, padding rows zero."""
    pixels = np.zeros((rows,) + examples[0].shape, np.float32)
    pixels[:len(examples)] = examples
    return {"pixel_values": pixels}

  def apply(self, variables, batch) -> jax.Array:
    """Frame embeds [B, F, P]."""
    pixels = batch["pixel_values"]
    frames = pixels.reshape((-1,) + pixels.shape[2:])
    embeds = self.model.apply(variables, frames, method=clip.Clip.encode_image)["embeds"]
    return embeds.reshape(pixels.shape[:2] + embeds.shape[-1:])

  def features(self, outputs: np.ndarray, row: int, example: np.ndarray
               ) -> Dict[Output, np.ndarray]:
    del example
    return {(self.name, level): outputs[row] if level == "FRA" else outputs[row].mean(axis=0)
            for level in self.levels}
