"""MER2023 (seed 004): entropy-based decision fusion and PNAO over three acoustic-visual fusion
structures (mmjax/projects/mer2023/README.md).

Structure i fuses one acoustic feature set (HuBERT-large layer 18, 19 or 20) with the visual
features (MANet, ResNet) by attention fusion (AFG); each has a joint emotion/valence decoder
(eq. 1-4); their predictions are fused by entropy weights (eq. 5-7); the loss is the
uncertainty-weighted AWL (eq. 9). A run trains on 80 % of the training labels, selects on the
other 20 % (split 'eval', the "Train&Val" column) and reports the test set (split 'test');
`python launch/mer2023.py` runs Table 1 (the four rows, PNAO rounds, Figures 2-4).

Data: synthetic MERTools-format features by default (mmjax.data.synthetic_mertools). Real
features: --config.data.mertools.features_root=DIR --config.data.mertools.train_labels=FILE
--config.data.mertools.test_labels=FILE, with data.mertools.features naming the directories
(defaults: hubert-large-L18/19/20-FRA, manet-UTT, resnet-FRA, pooled by mean and variance).

Variants (comma-separated):
  tiny        seconds on a laptop CPU (tests)
  baseline    Table 1's baseline: attention fusion of the three structures, one decoder
  l1          sparse training, alpha 1e-5 on every kernel (eq. 8; PNAO's step 1)
  sum         L_e + L_v instead of the uncertainty weighting
  avdigits    the real AV-digits benchmark as MERTools features (mmjax.data.avdigits_mertools)

Usage:
  python launch/train.py --config=configs/mer2023.py --workdir=/tmp/mer2023/enf
  python launch/mer2023.py --workdir=/tmp/mer2023   # Table 1, Fig. 2-4
"""

import ml_collections

from mmjax.config_files import apply_variants, load_sibling, set_keys

defaults = load_sibling(__file__, "defaults")

FEATURES = {"hubert18": "hubert-large-L18-FRA", "hubert19": "hubert-large-L19-FRA",
            "hubert20": "hubert-large-L20-FRA", "manet": "manet-UTT", "resnet": "resnet-FRA"}
STRUCTURES = (("hubert18", "manet", "resnet"), ("hubert19", "manet", "resnet"),
              ("hubert20", "manet", "resnet"))
PRUNABLE = r".*_0/kernel"
HOLDOUT = 0.2  # the hidden layers (mmjax.nn.attention_fusion.attention_consumers)


def get_config(variants: str = "") -> ml_collections.ConfigDict:
  """Returns the config; `variants` is the text after ':' in --config (module docstring)."""
  config = defaults.trainer_config(
      task="mer2023", total_steps=450, batch_size=32, eval_batch_size=128, log_every_steps=50,
      eval_every_steps=150, checkpoint_every_steps=150, keep_checkpoints=2,
      optimizer=defaults.optimizer_config(name="adam", learning_rate=1e-3),
      sharding_rules=((r".*kernel", (None, "model")),))
  defaults.mer_fusion_config(config, FEATURES, STRUCTURES)
  # Model selection on a held-out 20 % of the training labels ('eval'); the test set is only
  # reported ('test').
  set_keys(config.data, holdout_fraction=HOLDOUT, train_subset="train")
  config.evals = defaults.eval_splits(eval={"eval_split": "train", "eval_subset": "holdout"},
                                      test={"eval_split": "test"})
  # PNAO (launch/mer2023.py): NAOR k, rounds after the first, the kernels it prunes; the best
  # round is chosen by the held-out Com ('eval/com').
  config.pnao = ml_collections.ConfigDict(dict(rounds=10, k=0.05, prunable=PRUNABLE))
  return apply_variants(config, variants, VARIANTS, __file__)


def _tiny(config) -> None:
  """Seconds on a laptop CPU (tests)."""
  defaults.mer_tiny(config)
  config.pnao.rounds = 1


def _baseline(config) -> None:
  """Attention fusion over the structures' representations, one joint decoder."""
  config.model.decision = "attention"


def _l1(config) -> None:
  """Sparse training (eq. 8): alpha |Theta|_1 on every kernel."""
  config.optimizer.gradient_transforms = (
      ("mmjax.transforms.pruning.l1_penalty", {"alpha": 1e-5}),)


def _sum(config) -> None:
  """Plain sum of the emotion and valence losses."""
  config.loss.weighting = "sum"


def _avdigits(config) -> None:
  """AV-digits as MERTools features: the MFCCs, their deltas and delta-deltas (three acoustic
  views for the three structures) each fused with the picture; 10 digit classes."""
  defaults.mer_digits(config, (("mfcc", "pixels"), ("delta", "pixels"), ("delta2", "pixels")))


VARIANTS = {"tiny": _tiny, "baseline": _baseline, "l1": _l1, "sum": _sum,
            "avdigits": _avdigits}
