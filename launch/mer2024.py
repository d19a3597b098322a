"""Seed 003's MER2024 system in one command (mmjax/projects/emovclip/README.md): EmoVCLIP prompt
learning, EmoVCLIP video features in the MERTools layout, then the fusion network with and
without modality dropout and self-training under the 5-fold protocol, with accuracy when a
modality is missing at test time.

  python launch/mer2024.py --workdir=/tmp/mer2024             # embedded clips and features
  python launch/mer2024.py --workdir=/tmp/mer2024_tiny --emovclip_variants=tiny \
      --variants=tiny                                         # seconds (tests)
  python launch/mer2024.py --workdir=/tmp/mer2024_digits --stages=fusion --variants=avdigits
      # the fusion rows alone on AV-digits as MERTools features (no video: no EmoVCLIP stage)
  python launch/mer2024.py --workdir=/ckpt/mer2024 --emovclip_variants=paper \
      --emovclip_set=model.checkpoint=/models/clip-vit-base-patch32 \
      --train_labels=/data/mer2024/train-label.csv --test_labels=/data/mer2024/test-label.csv \
      --unlabelled_labels=/data/mer2024/unlabelled.csv --frames_dir=/data/mer2024/frames \
      --features_root=/data/mer2024/features   # real data: audio/image features extracted first

Stages (--stages): emovclip (configs/emovclip.py), features (EmoVCLIP video features of every
sample, as launch/extract_features.py --extractor=emovclip), fusion (configs/mer2024.py rows
--rows). Everything resumes; results.json and results.md go to --workdir/fusion.
"""

from absl import app, flags

from mmjax import cli, hostmem
from mmjax.projects.emovclip import pipeline, system

flags.DEFINE_string("workdir", "/tmp/mer2024", "Root of every stage's workdirs and results.")
flags.DEFINE_list("stages", list(pipeline.STAGES), f"Stages to run, from {list(pipeline.STAGES)}.")
flags.DEFINE_list("rows", list(system.ROWS), f"Fusion rows, from {list(system.ROWS)}.")
flags.DEFINE_string("variants", "", "configs/mer2024.py variants added to every fusion row.")
flags.DEFINE_string("emovclip_variants", "", "configs/emovclip.py variants (stage emovclip).")
flags.DEFINE_multi_string("emovclip_set", [], "key=value overrides of the EmoVCLIP config.")
flags.DEFINE_multi_string("set", [], "key=value overrides of every fusion row's config, e.g. "
                          "data.mertools.features={'audio':'chinese-hubert-large-L20-FRA',...}.")
flags.DEFINE_string("train_labels", "", "MERTools label CSV of the labelled training samples "
                    "(empty: the embedded set).")
flags.DEFINE_string("test_labels", "", "Label CSV (or names) of the test samples.")
flags.DEFINE_string("unlabelled_labels", "", "Names of the unlabelled pool (self-training).")
flags.DEFINE_string("frames_dir", "", "Per-sample frames (.npy or image folders).")
flags.DEFINE_string("features_root", "", "MERTools feature root (audio and image features in "
                    "it; EmoVCLIP's are written there).")
flags.DEFINE_integer("feature_batch", 8, "Samples per EmoVCLIP feature batch.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  files = None
  if FLAGS.train_labels:
    files = {"train": FLAGS.train_labels, "test": FLAGS.test_labels,
             "unlabelled": FLAGS.unlabelled_labels, "frames_dir": FLAGS.frames_dir,
             "features_root": FLAGS.features_root}
  results = pipeline.run_pipeline(
      FLAGS.workdir, stages=FLAGS.stages, rows=FLAGS.rows,
      emovclip_variants=FLAGS.emovclip_variants,
      emovclip_overrides=cli.parse_overrides(FLAGS.emovclip_set), fusion_variants=FLAGS.variants,
      fusion_overrides=cli.parse_overrides(FLAGS.set), files=files,
      feature_batch=FLAGS.feature_batch)
  if results:
    print(system.markdown(results))


if __name__ == "__main__":
  hostmem.tune_malloc()  # re-executes with GLIBC_TUNABLES set (mmjax/hostmem.py)
  app.run(main)
