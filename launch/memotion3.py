"""Seed 000's whole pipeline (mmjax/projects/memotion3/pipeline.py): contrastive CLIP
pretraining, unimodal hateful-meme pretraining, the Memotion runs with their hyperparameter
search, the majority-vote ensembles and Table 4.

  python launch/memotion3.py --workdir=/tmp/memotion3                # embedded data (resumes)
  python launch/memotion3.py --workdir=/tmp/m3_tiny --variants=tiny --targets=task_a  # minutes
  python launch/memotion3.py --workdir=/runs/memotion3 --variants=paper --backend=ray \\
      --clip_variants=paper --hateful_memes=/data/hateful_memes --mami=/data/MAMI \\
      --train_file=/data/memotion3/memotion3/train.csv \\
      --eval_file=/data/memotion3/memotion3/val.csv --test_file=/data/memotion3/memotion3/test.csv

Writes table4.md, table4.json and (with test memes) test_predictions.csv under --workdir.
"""

from absl import app, flags

from mmjax import hostmem
from mmjax.config_files import load_checkout_config
from mmjax.projects.memotion3 import pipeline
from mmjax.train import multirun

flags.DEFINE_string("workdir", "/tmp/memotion3", "Root of every run's workdir and the results.")
flags.DEFINE_string("variants", "", "configs/memotion3.py variants for stages (b) and (c).")
flags.DEFINE_string("clip_variants", "", "configs/clip_pretrain.py variants for stage (a).")
flags.DEFINE_string("targets", "all", f"'all' or some of {list(pipeline.TARGETS)}.")
flags.DEFINE_integer("trials", 3, "Search trials per model and target (the two best are kept).")
flags.DEFINE_integer("seed", 0, "Order in which the search visits its grid.")
flags.DEFINE_enum("backend", "auto", list(pipeline.BACKENDS),
                  "The search's trial runner: Ray Tune, local, or auto (Ray Tune if installed).")
flags.DEFINE_string("hateful_memes", "", "Facebook Hateful Memes folder (train.jsonl, img/).")
flags.DEFINE_string("mami", "", "MAMI folder (training/training.csv, test/).")
flags.DEFINE_integer("synthetic_size", 300, "Memes per synthetic pretraining corpus.")
flags.DEFINE_string("train_file", "", "Memotion train.csv ('' = the embedded synthetic memes).")
flags.DEFINE_string("eval_file", "", "Memotion val.csv.")
flags.DEFINE_string("test_file", "", "Memotion test.csv (unlabelled; predicted by the ensembles).")
flags.DEFINE_string("images", "", "Memotion image root ('' = image/ beside memotion3/).")
flags.DEFINE_string("clip_checkpoint", "", "A Hugging Face CLIP directory (config.model.checkpoint "
                    "of every CLIP run: architecture, tokenizer; weights for stage a).")
flags.DEFINE_string("bert_checkpoint", "",
                    "OSCAR's Hugging Face BERT directory ('' = a small random one).")
flags.DEFINE_integer("steps", 0, "> 0: every run trains this many steps, evaluating and "
                     "checkpointing 3 times (0: the configs' own schedules).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  memotion = multirun.with_values(load_checkout_config("memotion3", FLAGS.variants), **{
      "data.train_file": FLAGS.train_file, "data.eval_file": FLAGS.eval_file,
      "data.test_file": FLAGS.test_file, "data.images": FLAGS.images,
      "model.checkpoint": FLAGS.clip_checkpoint, "model.bert_checkpoint": FLAGS.bert_checkpoint},
      **multirun.schedule(FLAGS.steps))
  clip = multirun.with_values(load_checkout_config("clip_pretrain", FLAGS.clip_variants),
                              **{"model.checkpoint": FLAGS.clip_checkpoint},
                              **multirun.schedule(FLAGS.steps))
  pipeline.run_pipeline(clip, memotion, FLAGS.workdir,
      targets=pipeline.parse_targets(FLAGS.targets), trials=FLAGS.trials, seed=FLAGS.seed,
      backend=FLAGS.backend, hateful_memes=FLAGS.hateful_memes, mami=FLAGS.mami,
      synthetic_size=FLAGS.synthetic_size)


if __name__ == "__main__":
  hostmem.tune_malloc()  # re-executes with GLIBC_TUNABLES set (mmjax/hostmem.py)
  app.run(main)
