"""MER2024 (seed 003): the EmoVCLIP system's fusion network over MERTools features, with
modality dropout, 5-fold cross-validation and self-training (mmjax/projects/emovclip/README.md).

The fusion network (eq. 1) is one attention fusion (AFG, mmjax.nn.attention_fusion) over the
modalities' utterance features (frame-level features pooled to concat(mean, variance) over
time, as the seed says), then the emotion head; modality dropout (eq. 2) zeros each
modality's embedding per example with probability config.model.modality_dropout before the
fusion. Evaluated on the test set ('eval') and on the test set with each modality missing
('test_no_<modality>').

Data: synthetic MERTools-format features by default. Real MER2024 features: --config.data.
mertools.features_root=DIR --config.data.mertools.train_labels=FILE (and test_labels,
unlabelled_labels), with data.mertools.features naming the directories, e.g. the EmoVCLIP
features written by `python launch/extract_features.py --extractor=emovclip ...` and a text
feature ('text': 'baichuan-13b-UTT').

Variants (comma-separated):
  tiny      seconds on a laptop CPU (tests)
  mdrop     modality dropout p = 0.3 (the paper's best)
  avdigits  AV-digits as MERTools features (audio MFCCs and pictures), 10 % labelled and the
            rest as the unlabelled pool (mmjax.data.avdigits_mertools)

Usage:
  python launch/train.py --config=configs/mer2024.py:mdrop --workdir=/tmp/mer2024/mdrop
  python launch/mer2024.py --workdir=/tmp/mer2024   # the README table (5-fold, self-training)
"""

import ml_collections

from mmjax.config_files import apply_variants, load_sibling, set_keys

defaults = load_sibling(__file__, "defaults")

FEATURES = {"audio": "hubert-large-L20-FRA", "image": "clip-UTT", "video": "emovclip-FRA"}


def _missing_splits(fields) -> ml_collections.ConfigDict:
  """'eval' (data.eval_split: the test set; a k-fold run's validation fold) and
  'test_no_<field>' (the test set with that modality missing)."""
  return defaults.eval_splits(eval={}, **{f"test_no_{f}": {"eval_split": "test",
                                                          "missing_modalities": (f,)}
                                          for f in fields})


def get_config(variants: str = "") -> ml_collections.ConfigDict:
  """Returns the config; `variants` is the text after ':' in --config (module docstring)."""
  # The paper's fusion training (section 4.2): Adam 3e-4, batch 64, dropout 0.3; a fixed step
  # budget instead of its 30 epochs of MER2024's 5,030 clips (~2,000 steps at batch 64).
  config = defaults.trainer_config(
      task="mer2024_fusion", total_steps=600, batch_size=64, eval_batch_size=128,
      log_every_steps=50, eval_every_steps=200, checkpoint_every_steps=200, keep_checkpoints=2,
      optimizer=defaults.optimizer_config(name="adam", learning_rate=3e-4),
      sharding_rules=((r".*kernel", (None, "model")),))
  defaults.mer_fusion_config(config, FEATURES, (tuple(sorted(FEATURES)),))
  set_keys(config.model, valence=False, dropout=0.3)
  config.loss.weighting = "sum"
  config.evals = _missing_splits(sorted(FEATURES))
  config.protocol = ml_collections.ConfigDict(dict(folds=5, self_training_rounds=10, top_k=10))
  return apply_variants(config, variants, VARIANTS, __file__)


def _tiny(config) -> None:
  """Seconds on a laptop CPU (tests)."""
  defaults.mer_tiny(config)
  set_keys(config.protocol, folds=2, self_training_rounds=1, top_k=2)


def _mdrop(config) -> None:
  """Modality dropout p = 0.3 before the fusion (keep_one: never every modality)."""
  config.model.modality_dropout = 0.3


def _avdigits(config) -> None:
  """AV-digits: the MFCCs (pooled) and the picture; 10 % of the training rows labelled."""
  defaults.mer_digits(config, (("mfcc", "pixels"),))
  config.data.mertools.labelled = "few"
  config.evals = _missing_splits(config.data.modalities)


VARIANTS = {"tiny": _tiny, "mdrop": _mdrop, "avdigits": _avdigits}
