"""CLIP architecture configs, read from / written to Hugging Face's `config.json` layout.

Field names follow transformers' CLIPTextConfig / CLIPVisionConfig / CLIPConfig, so a config.json
written by `CLIPModel.save_pretrained` maps one-to-one. Named presets give the OpenAI shapes.
"""

import dataclasses
from typing import Any, Dict, Optional

ACTIVATIONS = ("quick_gelu", "gelu", "gelu_new", "gelu_pytorch_tanh", "relu")


@dataclasses.dataclass(frozen=True)
class TextConfig:
  """Text tower: causal pre-LN transformer over BPE tokens, pooled at the EOT token."""
  vocab_size: int = 49408
  hidden_size: int = 512
  intermediate_size: int = 2048
  num_hidden_layers: int = 12
  num_attention_heads: int = 8
  max_position_embeddings: int = 77
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5
  bos_token_id: int = 49406
  eos_token_id: int = 49407  # 2 = transformers' legacy configs: pool at argmax(input_ids)
  pad_token_id: int = 1


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  """Vision tower: ViT over non-overlapping patches, pooled at the class token."""
  hidden_size: int = 768
  intermediate_size: int = 3072
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  num_channels: int = 3
  image_size: int = 224
  patch_size: int = 32
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5


@dataclasses.dataclass(frozen=True)
class ClipConfig:
  """Both towers plus the shared projection size and the initial log temperature ln(1/0.07)."""
  text: TextConfig = TextConfig()
  vision: VisionConfig = VisionConfig()
  projection_dim: int = 512
  logit_scale_init_value: float = 2.6592

  def __post_init__(self):
    for name, tower in (("text_config", self.text), ("vision_config", self.vision)):
      if tower.hidden_act not in ACTIVATIONS:
        raise ValueError(f"{name}.hidden_act={tower.hidden_act!r}; supported: {ACTIVATIONS}")
      if tower.hidden_size % tower.num_attention_heads:
        raise ValueError(f"{name}.hidden_size={tower.hidden_size} is not divisible by "
                         f"num_attention_heads={tower.num_attention_heads}")
    if self.vision.image_size % self.vision.patch_size:
      raise ValueError(f"vision_config.image_size={self.vision.image_size} is not divisible by "
                       f"patch_size={self.vision.patch_size}")

  @classmethod
  def from_hf_dict(cls, config: Dict[str, Any]) -> "ClipConfig":
    """From a transformers CLIPConfig dict (config.json); unknown keys are ignored."""
    def pick(dataclass, values):
      names = {f.name for f in dataclasses.fields(dataclass)}
      return dataclass(**{k: v for k, v in (values or {}).items() if k in names and v is not None})
    text = pick(TextConfig, config.get("text_config"))
    vision = pick(VisionConfig, config.get("vision_config"))
    top = {k: config[k] for k in ("projection_dim", "logit_scale_init_value") if k in config}
    return cls(text=text, vision=vision, **top)

  def to_hf_dict(self) -> Dict[str, Any]:
    """The transformers CLIPConfig dict (what `CLIPConfig.from_dict` / from_pretrained read)."""
    text = dataclasses.asdict(self.text)
    vision = dataclasses.asdict(self.vision)
    text["projection_dim"] = vision["projection_dim"] = self.projection_dim
    text["model_type"], vision["model_type"] = "clip_text_model", "clip_vision_model"
    return {"architectures": ["CLIPModel"], "model_type": "clip", "projection_dim":
            self.projection_dim, "logit_scale_init_value": self.logit_scale_init_value,
            "text_config": text, "vision_config": vision}


def _vit_b(patch_size: int) -> ClipConfig:
  return ClipConfig(vision=VisionConfig(patch_size=patch_size))


PRESETS = {
    "ViT-B/32": _vit_b(32),
    "ViT-B/16": _vit_b(16),
    # A few-second CPU model for tests and the embedded defaults (real vocabulary and context).
    "tiny": ClipConfig(
        text=TextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4),
        vision=VisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=4, image_size=32, patch_size=8),
        projection_dim=32),
}


def get_config(name: str, overrides: Optional[Dict[str, Any]] = None) -> ClipConfig:
  """A preset by name ('ViT-B/32', 'ViT-B/16', 'tiny'), optionally with HF-style overrides, e.g.
  {'vision_config': {'image_size': 64}}."""
  if name not in PRESETS:
    raise ValueError(f"unknown CLIP preset {name!r}; available: {sorted(PRESETS)}")
  if not overrides:
    return PRESETS[name]
  base = PRESETS[name].to_hf_dict()
  for key, value in overrides.items():
    if isinstance(value, dict):
      base[key] = {**base.get(key, {}), **value}
    else:
      base[key] = value
  return ClipConfig.from_hf_dict(base)
