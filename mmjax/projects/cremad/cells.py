"""The cells of seed 002's Tables 1-4: seven shared encoders x three input modalities.

A cell is '<encoder>_<modality>' (e.g. 'i3d_multimodal'); `configs/cremad.py:<cell>` trains it.
ENCODERS gives each encoder's family: '2d' encoders read the middle-frame face crop and the
whole mel spectrogram (section 5.2), '3d' encoders the 24 fps frames and time-aligned
spectrogram chunks (section 5.6). PAPER_SETUP is Table 4 (training setup); PAPER_RESULTS are
Tables 1-3 (train loss, train accuracy, test loss, test accuracy), 'ablated_i3d' being the
multimodal I3D evaluated with the other half of its input blanked; HUMAN_ACCURACY is CREMA-D's
human rating accuracy (Cao et al. 2014) that the paper compares with.

Reading Table 4: its merged cells were flattened in the paper's text, so a blank cell takes the
value of the nearest filled cell above it in the same encoder family (e.g. every 2D CNN trains
50 epochs with Adam and cross-entropy; Simple3D(M) takes Simple3D(A)'s 36 epochs). Values
that cannot be placed that way are our choices and marked so in the README.
"""

from __future__ import annotations

ENCODERS = {"resnet18": "2d", "googlenet": "2d", "vgg16": "2d", "vit": "2d",
            "simple3d": "3d", "i3d": "3d", "videomae": "3d"}
MODALITIES = ("audio", "vision", "multimodal")
CELLS = tuple(f"{encoder}_{modality}" for encoder in ENCODERS for modality in MODALITIES)

HUMAN_ACCURACY = {"audio": 0.409, "vision": 0.582, "multimodal": 0.636}

# Table 4: batch size, learning rate (Adam, cross-entropy), epochs, dropout before the head.
PAPER_SETUP = {
    "simple3d_audio": dict(batch_size=8, learning_rate=1e-3, epochs=36, dropout=0.0),
    "simple3d_vision": dict(batch_size=8, learning_rate=1e-3, epochs=27, dropout=0.0),
    "simple3d_multimodal": dict(batch_size=8, learning_rate=1e-3, epochs=36, dropout=0.0),
    "i3d_audio": dict(batch_size=8, learning_rate=1e-3, epochs=5, dropout=0.5),
    "i3d_vision": dict(batch_size=8, learning_rate=1e-3, epochs=9, dropout=0.5),
    "i3d_multimodal": dict(batch_size=4, learning_rate=1e-3, epochs=16, dropout=0.5),
    "resnet18_audio": dict(batch_size=32, learning_rate=1e-4, epochs=50, dropout=0.0),
    "resnet18_vision": dict(batch_size=32, learning_rate=1e-4, epochs=50, dropout=0.0),
    "resnet18_multimodal": dict(batch_size=32, learning_rate=1e-3, epochs=50, dropout=0.0),
    "googlenet_audio": dict(batch_size=16, learning_rate=1e-4, epochs=50, dropout=0.2),
    "googlenet_vision": dict(batch_size=16, learning_rate=1e-4, epochs=50, dropout=0.2),
    "googlenet_multimodal": dict(batch_size=32, learning_rate=1e-4, epochs=50, dropout=0.2),
    "vgg16_audio": dict(batch_size=32, learning_rate=1e-3, epochs=50, dropout=0.5),
    "vgg16_vision": dict(batch_size=32, learning_rate=1e-5, epochs=50, dropout=0.5),
    "vgg16_multimodal": dict(batch_size=32, learning_rate=1e-3, epochs=50, dropout=0.5),
    "vit_audio": dict(batch_size=16, learning_rate=1e-4, epochs=50, dropout=0.4),
    "vit_vision": dict(batch_size=32, learning_rate=1e-4, epochs=50, dropout=0.2),
    "vit_multimodal": dict(batch_size=16, learning_rate=1e-4, epochs=50, dropout=0.4),
    "videomae_audio": dict(batch_size=8, learning_rate=1e-3, epochs=3, dropout=0.5),
    "videomae_vision": dict(batch_size=8, learning_rate=1e-3, epochs=4, dropout=0.5),
    "videomae_multimodal": dict(batch_size=8, learning_rate=1e-3, epochs=4, dropout=0.5),
}

# Tables 1-3: (train loss, train accuracy, test loss, test accuracy); None where the paper has
# '-'.
PAPER_RESULTS = {
    "audio": {"resnet18": (1.06, 0.8216, 1.04, 0.5825),
              "googlenet": (1.137, 0.907, 1.4209, 0.619),
              "vgg16": (1.4038, 0.6366, 1.5259, 0.5120), "simple3d": (1.213, 0.519, 1.294, 0.514),
              "i3d": (0.991, 0.623, 1.022, 0.605), "ablated_i3d": (None, None, 2.707, 0.448),
              "vit": (1.7931, 0.1634, 1.7908, 0.1738), "videomae": (1.566, 0.344, 1.512, 0.372)},
    "vision": {"resnet18": (1.0687, 0.8634, 1.3649, 0.6225),
               "googlenet": (1.179, 0.866, 1.470, 0.566),
               "vgg16": (1.0952, 0.9495, 1.3337, 0.7040), "simple3d": (1.160, 0.546, 1.417, 0.462),
               "i3d": (0.334, 0.878, 0.463, 0.831), "ablated_i3d": (None, None, 1.928, 0.540),
               "vit": (0.4378, 0.8361, 1.6823, 0.5934), "videomae": (1.795, 0.170, 1.790, 0.188)},
    "multimodal": {"resnet18": (1.1288, 0.8854, 1.4075, 0.6350),
                   "googlenet": (1.121, 0.925, 1.382, 0.661),
                   "vgg16": (1.6099, 0.4329, 1.5713, 0.4716),
                   "simple3d": (0.918, 0.647, 1.169, 0.573), "i3d": (0.211, 0.923, 0.629, 0.806),
                   "vit": (0.8365, 0.6811, 1.3221, 0.5598),
                   "videomae": (1.575, 0.334, 1.513, 0.366)},
}


# Training-set sizes of the paper's splits (sections 5.2 and 5.6), for epochs -> steps.
PAPER_TRAIN_SIZE = {"2d": 5209, "3d": 5951}


def paper_steps(cell: str) -> int:
  """Table 4's epochs of `cell` as optimizer steps: epochs * ceil(train size / batch size)."""
  encoder, _ = split_cell(cell)
  setup = PAPER_SETUP[cell]
  per_epoch = -(-PAPER_TRAIN_SIZE[ENCODERS[encoder]] // setup["batch_size"])
  return setup["epochs"] * per_epoch


def split_cell(cell: str) -> tuple[str, str]:
  """'i3d_multimodal' -> ('i3d', 'multimodal'); ValueError naming the cell and the choices."""
  encoder, _, modality = cell.rpartition("_")
  if encoder not in ENCODERS or modality not in MODALITIES:
    raise ValueError(f"unknown cell {cell!r}: expected <encoder>_<modality> with encoder in "
                     f"{sorted(ENCODERS)} and modality in {MODALITIES}")
  return encoder, modality
