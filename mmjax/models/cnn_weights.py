"""Torchvision checkpoints (e.g. resnet18-f37072fd.pth, vgg16-397923af.pth,
googlenet-1378be20.pth) -> Flax variables {'params', 'batch_stats'} of ResNet18, VGG16 and
GoogLeNet.

The Flax module names mirror torchvision's, with '_<i>' for a Sequential index, so one
`torch_name` serves the three models: ('params', 'layer1_0', 'downsample_0', 'kernel') <->
'layer1.0.downsample.0.weight', ('batch_stats', 'inception3a', 'branch2_1', 'bn', 'var') <->
'inception3a.branch2.1.bn.running_var'; kernel/scale -> weight, mean/var -> running_mean/var.
Layouts are converted by mmjax.models.torch_import. Two adaptations for fine-tuning:
  - head: when the checkpoint's classifier has another number of classes than the model (or the
    model has none, num_classes=0), the model's freshly initialised head is kept and the
    checkpoint's head tensors are reported as not loaded;
  - grayscale: a model fed 1-channel images gets the first conv's pretrained kernel summed over
    its 3 input channels, W'[o, 0] = sum_c W[o, c], which is exactly the pretrained network
    applied to the grayscale image replicated to RGB.
`num_batches_tracked` buffers and GoogLeNet's auxiliary classifiers (aux1.*, aux2.*) are ignored.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from mmjax.models.googlenet import GoogLeNet
from mmjax.models.resnet import ResNet18
from mmjax.models.torch_import import read_torch_state_dict, variables_from_state_dict
from mmjax.models.vgg import VGG16

__all__ = ["load_torchvision", "torch_name"]

_LOG = logging.getLogger(__name__)
_LEAVES = {"kernel": "weight", "scale": "weight", "mean": "running_mean", "var": "running_var"}
_IGNORED = (r".*num_batches_tracked", r"aux[12]\..*")
# model class -> (torch name of the first conv's weight, torch name of the classifier module)
_LAYOUTS = {
    ResNet18: ("conv1.weight", "fc"),
    VGG16: ("features.0.weight", "classifier.6"),
    GoogLeNet: ("conv1.conv.weight", "fc"),
}


def torch_name(path: Tuple[str, ...]) -> str:
  """Torchvision tensor name of a Flax leaf path (collection first), e.g.
  ('batch_stats', 'layer1_0', 'bn1', 'mean') -> 'layer1.0.bn1.running_mean'."""
  _, *modules, leaf = path
  return ".".join([re.sub(r"_(\d+)$", r".\1", m) for m in modules] + [_LEAVES.get(leaf, leaf)])


def load_torchvision(model: nn.Module, checkpoint: Union[str, os.PathLike, Mapping[str, Any]], *,
                     input_shape: Sequence[int] = (1, 224, 224, 3), seed: int = 0
                     ) -> Tuple[Dict[str, Any], List[str]]:
  """Variables {'params', 'batch_stats'} of `model` (ResNet18, VGG16 or GoogLeNet) from a
  torchvision checkpoint file or state dict ({name: tensor or array}).

  input_shape: an NHWC input the model accepts; its channel count decides the grayscale
  adaptation (module docstring). A head that differs from the checkpoint's is initialised with
  `model.init(jax.random.key(seed), ...)`. Returns (variables, the checkpoint tensors not loaded).
  Raises FileNotFoundError / ValueError naming the file and tensor for an unreadable file, a
  missing or mis-shaped tensor, or tensors the model does not use.
  """
  if type(model) not in _LAYOUTS:
    raise TypeError(f"load_torchvision supports {[c.__name__ for c in _LAYOUTS]}, not "
                    f"{type(model).__name__}")
  first_conv, head = _LAYOUTS[type(model)]
  if isinstance(checkpoint, (str, os.PathLike)):
    source = os.fspath(checkpoint)
    state_dict = read_torch_state_dict(source)
  else:
    source, state_dict = "state dict", {k: np.asarray(v) for k, v in checkpoint.items()}
  init = lambda: model.init(jax.random.key(seed), jnp.zeros(input_shape, jnp.float32))
  template = jax.eval_shape(init)
  model_shapes = {torch_name(path): leaf.shape
                  for path, leaf in traverse_util.flatten_dict(template).items()}

  in_channels = model_shapes[first_conv][2]
  if first_conv in state_dict and in_channels == 1 and state_dict[first_conv].shape[1] > 1:
    state_dict = dict(state_dict)
    state_dict[first_conv] = state_dict[first_conv].sum(axis=1, keepdims=True)

  keep, ignore, not_loaded = (), _IGNORED, []
  head_weight = f"{head}.weight"
  if head_weight not in model_shapes or (
      head_weight in state_dict
      and model_shapes[head_weight] != state_dict[head_weight].shape[::-1]):
    ignore += (re.escape(head) + r"\..*",)
    not_loaded = sorted(k for k in state_dict if k.startswith(f"{head}."))
    if head_weight in model_shapes:
      module = head.replace(".", "_")
      keep = (f"params/{module}/.*",)
      # Only the head is computed: XLA drops the rest of the initialisation.
      fresh_head = jax.jit(lambda: init()["params"][module])()
      template = {**template, "params": {**template["params"], module: fresh_head}}
  variables = variables_from_state_dict(state_dict, template, torch_name, keep=keep,
                                        ignore=ignore, source=source)
  if not_loaded:
    _LOG.info("%s: kept the model's own head; not loaded: %s", source, ", ".join(not_loaded))
  return variables, not_loaded
