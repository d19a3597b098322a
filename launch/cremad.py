"""Seed 002's Tables 1-3 and Figure 2 (mmjax/projects/cremad/tables.py): trains a list of cells
of configs/cremad.py and prints the tables next to the paper's numbers and the human accuracies.

  python launch/cremad.py --workdir=/tmp/cremad                                  # every cell
  python launch/cremad.py --workdir=/tmp/cremad_2d --cells=resnet18_audio,resnet18_vision,\\
      resnet18_multimodal --steps=300                                 # embedded synthetic clips
  python launch/cremad.py --workdir=/runs/cremad --variants=paper --root=/data/CREMA-D

Writes results.json, tables.md and figure2.png under --workdir; a killed run resumes (finished
cells are not trained again). The tables hold every finished cell under --workdir, each row with
the budget it was trained with, so cells trained by separate invocations (other --set or
--steps) share one table.
"""

import platform

from absl import app, flags

from mmjax import cli, hostmem
from mmjax.projects.cremad import cells, tables
from mmjax.train import multirun

flags.DEFINE_string("workdir", "/tmp/cremad", "Root of every cell's workdir and the results.")
flags.DEFINE_list("cells", list(cells.CELLS), "Cells <encoder>_<modality> to train.")
flags.DEFINE_list("variants", [], "configs/cremad.py variants added to every cell (e.g. paper).")
flags.DEFINE_string("root", "", "CREMA-D's root (VideoFlash/, AudioWAV/); '' = synthetic clips.")
flags.DEFINE_string("cache_root", "", "Where the preprocessed clips are cached, one directory "
                    "per preprocessing setting ('' = $MMJAX_CACHE or ~/.cache/mmjax).")
flags.DEFINE_enum("split", "random", ["random", "actor"], "The train/test split.")
flags.DEFINE_integer("workers", 2, "Preprocessing processes.")
flags.DEFINE_list("set", [], "Config overrides for every cell, key=value with a Python "
                  "literal value, e.g. data.max_frames=60,data.image_size=32.")
flags.DEFINE_integer("steps", 0, "> 0: every cell trains this many steps, evaluating and "
                     "checkpointing 3 times (0: the configs' own schedules).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  for cell in FLAGS.cells:
    cells.split_cell(cell)  # a typo fails before any training
  overrides = {"data.root": FLAGS.root, "data.cache_root": FLAGS.cache_root,
               "data.split": FLAGS.split, "data.workers": FLAGS.workers,
               **multirun.schedule(FLAGS.steps), **cli.parse_overrides(FLAGS.set)}
  results = tables.run_cells(FLAGS.workdir, FLAGS.cells, variants=FLAGS.variants,
                             overrides=overrides)
  print(tables.write_outputs(FLAGS.workdir, results,
                             f"{platform.machine()} {platform.processor() or ''}".strip()))


if __name__ == "__main__":
  hostmem.tune_malloc()  # re-executes with GLIBC_TUNABLES set (mmjax/hostmem.py)
  app.run(main)
