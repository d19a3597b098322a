"""Tiny random HuBERT checkpoints written by transformers' PyTorch HubertModel (tests only)."""


def tiny_config(**overrides):
  """A HubertConfig 32 wide with 2 layers and a 2-layer conv stack of total stride 10 (a frame
  per 10 samples, 20 samples of receptive field)."""
  from transformers import HubertConfig  # pylint: disable=import-outside-toplevel
  values = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=37, conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2),
                num_conv_pos_embedding_groups=4, num_conv_pos_embeddings=16)
  return HubertConfig(**{**values, **overrides})


def write_checkpoint(path: str, seed: int = 0, **overrides):
  """Saves a random tiny HubertModel (non-trivial norms and biases) with save_pretrained;
  returns the torch model in eval mode."""
  import torch  # pylint: disable=import-outside-toplevel
  from transformers import HubertModel  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  model = HubertModel(tiny_config(**overrides)).eval()
  with torch.no_grad():
    for name, param in model.named_parameters():
      if "norm" in name or name.endswith("bias"):
        param.add_(torch.randn_like(param) * 0.1)
  model.save_pretrained(path, safe_serialization=True)
  return model
