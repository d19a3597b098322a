"""Writes MERTools-layout features (<output>/<name>-UTT|FRA/<sample>.npy) from raw media with
models on disk (mmjax/features/README.md):

  # HuBERT hidden states of layers 18-20 of 16 kHz <sample>.wav files, utterance and frame level
  python launch/extract_features.py --extractor=hubert --input=/data/mer2024/audio \
      --output=/data/mer2024/features --hubert_checkpoint=/models/chinese-hubert-large \
      --name=chinese-hubert-large --layers=18,19,20 --batch_size=8
  # CLIP embeddings of 8 sampled frames per clip (<sample>.npy or <sample>/ frame folders)
  python launch/extract_features.py --extractor=clip --input=/data/mer2024/frames \
      --output=/data/mer2024/features --clip_checkpoint=/models/clip-vit-large-patch14
  # EmoVCLIP video features from a trained launch/train.py --config=configs/emovclip.py run
  python launch/extract_features.py --extractor=emovclip --input=/data/mer2024/frames \
      --output=/data/mer2024/features --emovclip_workdir=workdir/emovclip --emovclip_step=best \
      --labels=/data/mer2024/label-6way.csv

Samples: the names of --labels (a CSV with a `name` column) or every sample in --input. A
sample whose output files all exist is skipped, so an interrupted run started again resumes.
Batches are split over all local devices (--batch_size a multiple of their count).
"""

import os

from absl import app, flags

from mmjax import hostmem

EXTRACTORS = ("hubert", "clip", "emovclip")

flags.DEFINE_enum("extractor", None, list(EXTRACTORS), "What to extract: 'hubert' (hidden "
                  "states of .wav files), 'clip' (CLIP frame embeddings of a Hugging Face "
                  "checkpoint) or 'emovclip' (the prompted CLIP of a trained EmoVCLIP run).")
flags.DEFINE_string("input", None, "Input directory: <sample>.wav files (hubert) or frames, "
                    "<sample>.npy / <sample>/ (clip, emovclip).")
flags.DEFINE_string("output", None, "The feature root: <output>/<name>-<level>/<sample>.npy.")
flags.DEFINE_string("name", "", "Extractor name (folder prefix; hubert appends -L<layer>). "
                    "Default: the checkpoint folder's name, or 'emovclip'.")
flags.DEFINE_string("labels", "", "A label file whose `name` column lists the samples "
                    "(MERTools' name,discrete,valence CSV); '' = every sample in --input.")
flags.DEFINE_list("levels", ["UTT", "FRA"], "UTT (one vector per sample: the mean over "
                  "frames) and/or FRA (one per frame).")
flags.DEFINE_integer("batch_size", 8, "Samples per batch, a multiple of the local devices.")
flags.DEFINE_integer("workers", 4, "Threads reading input files.")
flags.DEFINE_integer("log_every", 100, "Samples between progress lines.")
flags.DEFINE_string("hubert_checkpoint", "", "--extractor=hubert: a Hugging Face HuBERT "
                    "directory (config.json, model.safetensors[, preprocessor_config.json]).")
flags.DEFINE_list("layers", [], "--extractor=hubert: hidden states to write, 0 (encoder input) "
                  "to num_hidden_layers (default: the last).")
flags.DEFINE_enum("normalize", "auto", ["auto", "on", "off"], "--extractor=hubert: zero-mean "
                  "unit-variance per utterance; auto = the checkpoint's "
                  "preprocessor_config.json do_normalize (true without one).")
flags.DEFINE_bool("resample", False, "--extractor=hubert: resample files at another rate "
                  "(librosa soxr_hq) instead of failing.")
flags.DEFINE_float("bucket_seconds", 1.0, "--extractor=hubert: batches are padded to a "
                   "multiple of this duration (fewer distinct shapes, fewer compilations).")
flags.DEFINE_string("clip_checkpoint", "", "--extractor=clip: a Hugging Face CLIP directory.")
flags.DEFINE_string("emovclip_workdir", "", "--extractor=emovclip: the training run's workdir.")
flags.DEFINE_string("emovclip_step", "latest", "--extractor=emovclip: checkpoint: 'latest', "
                    "'best' or a step.")
flags.DEFINE_integer("num_frames", 8, "--extractor=clip,emovclip: frames sampled per sample.")
flags.mark_flags_as_required(["extractor", "input", "output"])
FLAGS = flags.FLAGS

_REQUIRED = {"hubert": "hubert_checkpoint", "clip": "clip_checkpoint",
             "emovclip": "emovclip_workdir"}


def _default_name(path: str) -> str:
  return os.path.basename(os.path.normpath(path))


def build_extractor():
  """The extractor the flags describe, and the kind of its inputs ('wav' or 'frames')."""
  # pylint: disable=import-outside-toplevel
  from mmjax import features
  key = _REQUIRED[FLAGS.extractor]
  if not FLAGS[key].value:
    raise app.UsageError(f"--extractor={FLAGS.extractor} needs --{key}")
  if FLAGS.extractor == "hubert":
    if not all(layer.isdigit() for layer in FLAGS.layers):
      raise app.UsageError(f"--layers={','.join(FLAGS.layers)}: expected layer numbers")
    normalize = {"auto": None, "on": True, "off": False}[FLAGS.normalize]
    return features.HubertFeatures(
        FLAGS.hubert_checkpoint, FLAGS.input,
        name=FLAGS.name or _default_name(FLAGS.hubert_checkpoint),
        layers=[int(layer) for layer in FLAGS.layers], levels=FLAGS.levels,
        resample=FLAGS.resample, normalize=normalize,
        bucket_seconds=FLAGS.bucket_seconds), "wav"
  if FLAGS.extractor == "clip":
    model, variables = features.from_checkpoint(FLAGS.clip_checkpoint)
    name = FLAGS.name or _default_name(FLAGS.clip_checkpoint)
  else:
    model, variables, step = features.from_emovclip_workdir(FLAGS.emovclip_workdir,
                                                            FLAGS.emovclip_step)
    print(f"EmoVCLIP: step {step} of {FLAGS.emovclip_workdir}", flush=True)
    name = FLAGS.name or "emovclip"
  return features.ClipFrameFeatures(model, variables, FLAGS.input, name=name,
                                    levels=FLAGS.levels, num_frames=FLAGS.num_frames), "frames"


def main(argv):
  del argv
  # pylint: disable=import-outside-toplevel
  from mmjax import features
  from mmjax.train.trainer import setup_logging
  setup_logging()
  extractor, kind = build_extractor()
  names = (features.label_names(FLAGS.labels) if FLAGS.labels
           else features.sample_names(FLAGS.input, kind))
  summary = features.extract(extractor, names, FLAGS.output, batch_size=FLAGS.batch_size,
                             workers=FLAGS.workers, log_every=FLAGS.log_every,
                             prefix=FLAGS.extractor)
  print(f"{FLAGS.extractor}: wrote {summary['written']} samples, skipped {summary['skipped']} "
        f"already done, in {summary['seconds']:.1f} s -> "
        f"{', '.join(f'{e}-{level}' for e, level in extractor.outputs)} under {FLAGS.output}",
        flush=True)


if __name__ == "__main__":
  hostmem.tune_malloc()  # re-executes with GLIBC_TUNABLES set (mmjax/hostmem.py)
  app.run(main)
