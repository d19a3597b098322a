"""Seed 001's comparison of one family: the correlation tower, then E, L, CM-G and CM-C.

  python launch/compare.py --config=configs/ytb8m.py --family=transformer
  python launch/compare.py --config=configs/ytb8m.py:tiny --family=netvlad --workdir=/tmp/nv
  python launch/compare.py --config=configs/ytb8m.py:paper --family=attention_rnn \
      --workdir=/ckpt/ar --config.data.train_pattern=... --config.data.eval_pattern=... \
      --config.data.taxonomy_file=vocabulary.csv

Trains the tower (--tower_config; default: configs/ytb8m_correlation.py beside --config, with
the same tiny/paper variants and --config's data section) into <workdir>/tower, then each row
`<family>_<fusion>` of --config into <workdir>/<family>_<fusion>, and prints Tables 4-9's layout
(mmjax/projects/youtube8m/compare.py), also written to <workdir>/comparison_<family>.md and .json
(give the families one --workdir and they share the tower). Run it
again after an interruption: every run resumes. It runs as one process (on all its local
devices); for multi-host training run the rows with launch/train.py and compare afterwards.
"""

import os

from absl import app, flags
from ml_collections import config_flags

from mmjax import cli, hostmem
from mmjax.config_files import load_sibling

cli.define_flags("Root of the comparison's runs (shared by the families: one tower). "
                 "Default: ./workdir/compare[_<variants>].")
config_flags.DEFINE_config_file("tower_config", None, "The correlation tower's config "
                                "(default: ytb8m_correlation.py beside --config).",
                                lock_config=True)
flags.DEFINE_enum("family", "transformer", ["transformer", "netvlad", "attention_rnn"],
                  "The model family (rows <family>_early, _late, _cmg, _cmc).")
flags.DEFINE_integer("examples", 4, "Videos per table in Tables 6 and 7.")
flags.DEFINE_integer("videos", 0, "Evaluation videos searched for Tables 6 and 7 "
                     "(0: one eval batch).")


def main(argv):
  del argv
  # pylint: disable-next=import-outside-toplevel
  from mmjax.projects.youtube8m.compare import Comparison, default_tower_config
  path, variants = cli.config_spec()
  rows = load_sibling(path, os.path.splitext(os.path.basename(path))[0]).VARIANTS  # --config's
  family = flags.FLAGS.family
  root = cli.FLAGS.workdir or "workdir/compare" + (
      f"_{variants.replace(',', '_')}" if variants else "")
  base = cli.FLAGS.config
  tower = flags.FLAGS.tower_config
  if tower is None:
    tower = default_tower_config(path, variants, base)
  comparison = Comparison(root, family, base, tower,
                          lambda config, fam, fusion: rows[f"{fam}_{fusion}"](config))
  print(comparison.run(num_examples=flags.FLAGS.examples, num_videos=flags.FLAGS.videos)
        ["markdown"])


if __name__ == "__main__":
  hostmem.tune_malloc()  # re-executes with GLIBC_TUNABLES set (mmjax/hostmem.py)
  app.run(main)
