"""YouTube-8M video categorization (seed 001: cross-modal video categorization;
mmjax/projects/youtube8m).

The defaults (a 1-layer Transformer, late fusion, 1000 steps of batch 32) finish the embedded
synthetic run in under 10 minutes on a 2-core CPU.

Variants (combine with commas, applied left to right, e.g. `configs/ytb8m.py:paper,netvlad`):
  tiny      a few seconds on a laptop CPU: tiny model and synthetic data (tests)
  paper     seed 001's set-up for the real 2018 data: batch 128, 300 frames, <= 10 epochs
  netvlad   NetVLAD towers (128 video / 64 audio clusters) instead of the Transformer
  early     early fusion: rgb and audio concatenated per frame, one tower
Rows of seed 001's Tables 4 and 8, `<family>_<fusion>` (the default is transformer_late). The
cm rows load a trained correlation tower (configs/ytb8m_correlation.py) frozen: add
--config.model.correlation.workdir=<the tower run's workdir>.
  transformer_early    Transformer, early fusion (TM-E)
  transformer_late     Transformer, late fusion (TM-L)
  transformer_cmg      cross-modal Transformer, tower output as gate (TM-CM-G)
  transformer_cmc      cross-modal Transformer, tower output as concatenated feature (TM-CM-C)
  netvlad_early        NetVLAD, early fusion (NV-E)
  netvlad_late         NetVLAD, late fusion (NV-L)
  netvlad_cmg          cross-modal NetVLAD, gate (NV-CM-G)
  netvlad_cmc          cross-modal NetVLAD, concatenated (NV-CM-C)
  attention_rnn_early  attention clusters over LSTM states (Long et al.), early fusion
  attention_rnn_late   attention clusters over LSTM states, late fusion
  attention_rnn_cmg    cross-modal attention RNN, gate
  attention_rnn_cmc    cross-modal attention RNN, concatenated

Usage:
  python launch/train.py --config=configs/ytb8m.py --workdir=/tmp/ytb8m
  python launch/train.py --config=configs/ytb8m.py:tiny --workdir=/tmp/ytb8m_tiny  # seconds
  python launch/train.py --config=configs/ytb8m.py:paper,netvlad --workdir=/ckpt/netvlad ...
  python launch/train.py --config=configs/ytb8m.py \
      --config.data.train_pattern='/data/yt8m/2/frame/train*.tfrecord' \
      --config.data.eval_pattern='/data/yt8m/2/frame/validate*.tfrecord'

With empty patterns a synthetic dataset in the real frame-level TFRecord format is written once
to `data.synthetic.directory` (default: ~/.cache/mmjax, or $MMJAX_CACHE) and reused.
"""

import ml_collections

from mmjax.config_files import apply_variants, load_sibling, set_keys

defaults = load_sibling(__file__, "defaults")


def get_config(variants: str = "") -> ml_collections.ConfigDict:
  """Returns the config; `variants` is the text after ':' in --config (e.g. 'tiny' or
  'paper,netvlad'); see the module docstring."""
  # Seed 001: Adam 2e-4, LR x0.1 when the validation loss plateaus (checked at every evaluation,
  # patience 2). The best checkpoint by held-out GAP is kept next to the latest 3.
  config = defaults.trainer_config(
      task="youtube8m", total_steps=1000, batch_size=32, eval_batch_size=64,
      log_every_steps=50, eval_every_steps=500, checkpoint_every_steps=250, keep_checkpoints=3,
      best_metric="eval/gap", best_mode="max",
      optimizer=defaults.optimizer_config(name="adam", learning_rate=2e-4,
                                          reduce_on_plateau=True))
  # Parameter partitioning: (regex on the '/'-joined parameter path, partition spec per kernel
  # dimension); first match wins; unmatched parameters are replicated. 'model' = tensor parallel,
  # 'data' = FSDP. NetVLAD's hidden layer dominates the parameter count (67M of the default
  # late-fusion model's 73M at hidden_size 512; ~285M in WILLOW).
  config.sharding_rules = (
      (r".*netvlad_hidden/kernel", ("data", "model")),
      (r".*classifier/kernel", (None, "model")),
  )

  config.data = ml_collections.ConfigDict()
  config.data.name = "youtube8m"
  config.data.train_pattern = ""  # empty: write/reuse the synthetic dataset
  config.data.eval_pattern = ""
  config.data.level = "frame"  # 'frame' (SequenceExample) or 'video' (Example, mean_rgb/mean_audio)
  config.data.id_key = "id"  # 2017 data: 'video_id'
  config.data.labels_key = "labels"
  config.data.num_classes = 3862  # 2017 data: 4716
  config.data.feature_names = ("rgb", "audio")  # video-level: ('mean_rgb', 'mean_audio')
  config.data.feature_sizes = (1024, 128)
  config.data.max_frames = 300
  config.data.skip_bad_records = False
  # With skip_bad_records: stop once more than this fraction of the records read are bad.
  config.data.max_bad_fraction = 0.01
  config.data.num_threads = 2  # threads per process that read (each a whole batch at a time)
  # > 0: that many worker processes read instead of the threads (no shared GIL; batches come
  # through shared memory, /dev/shm). Worth it where the host has cores the step leaves idle.
  config.data.num_workers = 0
  config.data.prefetch_batches = 2  # batches read ahead in all (the threads' count among them)
  config.data.eval_max_examples = 0  # 0: the whole eval split
  config.data.taxonomy_file = ""  # CSV class_index,level[,name] for level-wise metrics
  config.data.synthetic = ml_collections.ConfigDict()
  config.data.synthetic.directory = ""  # empty: $MMJAX_CACHE or ~/.cache/mmjax
  config.data.synthetic.num_train = 3072
  config.data.synthetic.num_eval = 512
  config.data.synthetic.num_labelled_classes = 48
  config.data.synthetic.min_frames = 20
  config.data.synthetic.max_frames = 300
  config.data.synthetic.num_shards = 4
  config.data.synthetic.seed = 1234

  config.model = ml_collections.ConfigDict()
  config.model.name = "transformer"  # 'transformer', 'netvlad' or 'attention_rnn'
  # 'early' (concat per frame), 'late' (tower per modality + MLP), 'cmg' / 'cmc' (cross-modal
  # layer guided by the correlation tower as a gate / as a concatenated feature)
  config.model.fusion = "late"
  config.model.dropout_rate = 0.1
  config.model.fusion_hidden = 256  # late-fusion MLP width
  config.model.transformer = ml_collections.ConfigDict()
  config.model.transformer.d_model = 64
  config.model.transformer.num_heads = 4
  config.model.transformer.num_layers = 1
  config.model.transformer.mlp_dim = 128
  config.model.netvlad = ml_collections.ConfigDict()
  # Clusters per modality (video, audio); early fusion uses the first.
  config.model.netvlad.clusters = (128, 64)
  config.model.netvlad.hidden_size = 512
  config.model.netvlad.context_gating = True
  # Attention clusters over LSTM states (Long et al. 2018, no shifting operation; seed 001 2).
  config.model.attention_rnn = ml_collections.ConfigDict()
  config.model.attention_rnn.hidden = 128  # LSTM units
  config.model.attention_rnn.num_units = (8, 4)  # attention units per modality (video, audio)
  config.model.attention_rnn.attention_hidden = 64  # width of each unit's tanh projection
  # Cross-modal rows (fusion 'cmg' / 'cmc'): F's kind, CM-C's context layers, the frozen tower.
  config.model.crossmodal = ml_collections.ConfigDict()
  config.model.crossmodal.transform = "relu"  # 'relu' or 'mlp' (mmjax/nn/crossmodal.py)
  config.model.crossmodal.context_dim = 16  # CM-C: width of the FC layers on the tower output
  config.model.crossmodal.context_layers = 2  # CM-C: 2-3 FC layers (seed 001 section 3)
  config.model.correlation = ml_collections.ConfigDict()
  config.model.correlation.hidden = 128  # = the tower run's config.model.hidden
  # The trained tower's run (configs/ytb8m_correlation.py workdir); the cmg / cmc rows load its
  # 'tower' params into 'correlation', frozen, through config.init_from.
  config.model.correlation.workdir = ""

  return apply_variants(config, variants, VARIANTS, __file__)


def _netvlad(config: ml_collections.ConfigDict) -> None:
  """NetVLAD towers (WILLOW head; clusters from config.model.netvlad)."""
  config.model.name = "netvlad"


def _early(config: ml_collections.ConfigDict) -> None:
  """Early fusion: one tower over rgb and audio concatenated per frame."""
  config.model.fusion = "early"


def paper_schedule_and_data(config: ml_collections.ConfigDict) -> None:
  """Seed 001's training set-up for the real 2018 data (set data.train_pattern/eval_pattern):
  Adam 2e-4, batch 128, 300 frames, <= 10 epochs of 3,888,919 videos (303,822 steps), LR
  reduced on plateau with patience 2 (also used by configs/ytb8m_correlation.py). The input
  keeps the default 2 reader threads and 2 batches read ahead (under one float32 batch of
  host memory; the starter code's 8 readers would hold 8 uint8 batches, two float32 batches'
  worth): on a host whose cores the step does not need, read with data.num_workers processes
  (or more threads)."""
  set_keys(config, batch_size=128, eval_batch_size=512, total_steps=10 * 3_888_919 // 128,
                    log_every_steps=500, eval_every_steps=30_000, checkpoint_every_steps=5_000)


def _make_paper(config: ml_collections.ConfigDict) -> None:
  """paper_schedule_and_data; model sizes: the paper does not give its Transformer sizes,
  these are a moderate choice."""
  paper_schedule_and_data(config)
  config.model.fusion_hidden = 1024
  set_keys(config.model.transformer, d_model=256, num_heads=8, num_layers=2, mlp_dim=1024)
  config.model.netvlad.hidden_size = 1024
  set_keys(config.model.attention_rnn, hidden=512, num_units=(16, 8), attention_hidden=256)
  config.model.correlation.hidden = 512


def tiny_schedule_and_data(config: ml_collections.ConfigDict) -> None:
  """Few steps on tiny synthetic data (also used by configs/ytb8m_correlation.py)."""
  set_keys(config, total_steps=8, batch_size=8, eval_batch_size=8, log_every_steps=2,
                    eval_every_steps=8, checkpoint_every_steps=4)
  set_keys(config.data, max_frames=24, num_classes=64, num_threads=1)
  set_keys(config.data.synthetic, num_train=64, num_eval=24, num_labelled_classes=12,
                    min_frames=4, max_frames=24, num_shards=2)


def _make_tiny(config: ml_collections.ConfigDict) -> None:
  """A few seconds on a laptop CPU: tiny model, tiny synthetic data, few steps."""
  tiny_schedule_and_data(config)
  config.model.fusion_hidden = 32
  set_keys(config.model.transformer, d_model=16, num_heads=2, num_layers=1, mlp_dim=32)
  set_keys(config.model.netvlad, clusters=(8, 4), hidden_size=32)
  set_keys(config.model.attention_rnn, hidden=8, num_units=(2, 2), attention_hidden=8)
  set_keys(config.model.crossmodal, context_dim=4)
  config.model.correlation.hidden = 16


def _row(family: str, fusion: str):
  """The variant '<family>_<fusion>': one row of seed 001's Tables 4 and 8."""
  def apply(config: ml_collections.ConfigDict) -> None:
    config.model.name, config.model.fusion = family, fusion
    if fusion in ("cmg", "cmc"):
      config.init_from = (defaults.init_from_entry(
          config.model.correlation.get_ref("workdir"), source_subtree="tower",
          target_subtree="correlation", frozen=True),)
  apply.__doc__ = f"model.name={family!r}, model.fusion={fusion!r} (a row of seed 001's tables)"
  return apply


FAMILIES = ("transformer", "netvlad", "attention_rnn")
VARIANTS = {"tiny": _make_tiny, "paper": _make_paper, "netvlad": _netvlad, "early": _early,
            **{f"{family}_{fusion}": _row(family, fusion)
               for family in FAMILIES for fusion in ("early", "late", "cmg", "cmc")}}
