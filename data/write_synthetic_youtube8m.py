"""Writes the synthetic YouTube-8M dataset (real frame-level TFRecord format).

Usage:
  python data/write_synthetic_youtube8m.py --directory=/tmp/yt8m_synthetic
  python data/write_synthetic_youtube8m.py --directory=/tmp/tiny --num_train=64 --num_eval=24 \
      --num_classes=64 --num_labelled_classes=12 --min_frames=4 --max_frames=24 --num_shards=2

Then train on it with
  --config.data.train_pattern='<directory>/train-*.tfrecord'
  --config.data.eval_pattern='<directory>/validate-*.tfrecord'
  --config.data.taxonomy_file=<directory>/taxonomy.csv
(the trainer also writes and caches this dataset by itself when the patterns are empty).
"""

import argparse

from mmjax.data.synthetic import write_synthetic_youtube8m


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--directory", required=True, help="output directory")
  parser.add_argument("--num_train", type=int, default=3072)
  parser.add_argument("--num_eval", type=int, default=512)
  parser.add_argument("--num_classes", type=int, default=3862)
  parser.add_argument("--num_labelled_classes", type=int, default=48)
  parser.add_argument("--min_frames", type=int, default=20)
  parser.add_argument("--max_frames", type=int, default=300)
  parser.add_argument("--num_shards", type=int, default=4)
  parser.add_argument("--seed", type=int, default=1234)
  parser.add_argument("--feature_sizes", type=int, nargs=2, default=(1024, 128),
                      metavar=("RGB", "AUDIO"))
  parser.add_argument("--id_key", default="id", help="'id' (2018 layout) or 'video_id' (2017)")
  args = parser.parse_args(argv)
  files = write_synthetic_youtube8m(
      args.directory, num_train=args.num_train, num_eval=args.num_eval,
      num_classes=args.num_classes, num_labelled_classes=args.num_labelled_classes,
      min_frames=args.min_frames, max_frames=args.max_frames, num_shards=args.num_shards,
      seed=args.seed, feature_sizes=tuple(args.feature_sizes), id_key=args.id_key)
  print(f"train:    {files.train_pattern}\neval:     {files.eval_pattern}\n"
        f"taxonomy: {files.taxonomy_file}")


if __name__ == "__main__":
  main()
