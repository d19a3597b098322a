"""Synthetic memes in the Memotion 3 release's format, so the pipeline runs without the data.

Layout (as distributed, see `memotion_table`): `memotion3/{train,val}.csv` (tab-separated,
header `'' Image_URL humour sarcastic offensive motivational overall ocr`, the first column the
meme id), `memotion3/test.csv` (no label columns), and JPEG images `image/<split>/<id>.jpg`
with the caption rendered in a top band, as memes have it.

Beside each image, the regions an object detector would give OSCAR (`regions.py`: a face, the
caption band, the stars; tags, boxes and appearance features, the face's encoding its mood).

Each meme comes from five hidden factors, so that some labels need the image, some the text
and some both (a unimodal model cannot reach the multimodal one):
  image mood m_i in {0, 1, 2}: a frowning blue, flat gray or smiling yellow face;
  laughs h in {0..3}: that many magenta stars around the face;
  text mood m_t in {0, 1, 2}: a negative, neutral or positive phrase in the OCR text;
  insults o in {0..3}: that many insult words in the text;
  a motivational phrase in the text (or not), and a '/s' sarcasm tag (or not).
Labels: humour = h (image only), offensive = o and motivational (text only), overall
sentiment = m_i + m_t (very_negative .. very_positive: both), sarcasm = |m_i - m_t| (not,
general, twisted_meaning), very_twisted when the moods are opposite and the text carries '/s'
(both). The class frequencies follow the Memotion 3 training set (paper Table 2) roughly; each
label is replaced by a uniformly drawn class with probability `label_noise`.
"""

from __future__ import annotations

import csv
import os
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mmjax.data import cache
from mmjax.projects.memotion3 import regions
from mmjax.projects.memotion3.memotion_table import LABEL_VOCABULARIES

__all__ = ["HEADER", "TEST_HEADER", "draw_meme", "labels_of", "meme_factors", "synthetic_settings",
           "write_synthetic_memes"]

GENERATOR_VERSION = 2  # 2: region features for OSCAR
HEADER = ("", "Image_URL", "humour", "sarcastic", "offensive", "motivational", "overall", "ocr")
TEST_HEADER = ("", "Image_URL", "ocr")
SPLITS = ("train", "val", "test")

_MOOD_P = (0.3, 0.35, 0.35)
_LAUGHS_P = (0.15, 0.48, 0.29, 0.08)
INSULTS_P = (0.6, 0.28, 0.09, 0.03)
MOTIVATIONAL_P, _SARCASM_TAG_P = 0.12, 0.4
_FACE_COLOURS = ((70, 110, 230), (160, 160, 160), (245, 210, 40))  # frown, flat, smile
_STAR_COLOUR = (225, 30, 200)
OPENERS = ("when you", "me after", "my friend", "that moment", "nobody:", "pov:", "teacher:",
            "mom:", "me:")
MOOD_PHRASES = (("worst day ever", "so sad", "i hate mondays", "this is terrible",
                  "crying inside"),
                 ("it is what it is", "okay then", "just another day", "fine i guess",
                  "whatever"),
                 ("best day ever", "so happy", "love this", "feeling great", "pure joy"))
INSULTS = ("idiot", "loser", "clown", "stupid")
MOTIVATION = ("never give up", "keep going", "believe in yourself", "you can do it")
FILLERS = ("lol", "bro", "yaar", "bhai", "kya scene", "literally", "same")


def synthetic_settings(*, num_train: int, num_val: int, num_test: int, image_size: int,
                       label_noise: float, seed: int) -> dict:
  """The settings that determine a synthetic meme set (JSON-able; hashed into its path)."""
  return dict(version=GENERATOR_VERSION, num_train=int(num_train), num_val=int(num_val),
              num_test=int(num_test), image_size=int(image_size),
              label_noise=float(label_noise), seed=int(seed))


def meme_factors(rng: np.random.Generator) -> dict:
  """One meme's hidden factors (module docstring)."""
  image_mood, text_mood = (int(rng.choice(3, p=_MOOD_P)) for _ in range(2))
  return dict(image_mood=image_mood, text_mood=text_mood,
              laughs=int(rng.choice(4, p=_LAUGHS_P)), insults=int(rng.choice(4, p=INSULTS_P)),
              motivational=bool(rng.random() < MOTIVATIONAL_P),
              sarcasm_tag=bool(rng.random() < _SARCASM_TAG_P))


def labels_of(factors: dict) -> dict:
  """{label: class index} of LABEL_VOCABULARIES from the factors (module docstring)."""
  mismatch = abs(factors["image_mood"] - factors["text_mood"])
  return dict(humour=factors["laughs"],
              sarcasm=3 if mismatch == 2 and factors["sarcasm_tag"] else mismatch,
              offensive=factors["insults"], motivational=int(factors["motivational"]),
              sentiment=factors["image_mood"] + factors["text_mood"])


def _text(rng: np.random.Generator, factors: dict) -> str:
  """The OCR text: opener, mood phrase, insults, motivation, fillers; some with line breaks."""
  words = [OPENERS[rng.integers(len(OPENERS))],
           MOOD_PHRASES[factors["text_mood"]][rng.integers(5)]]
  words += [INSULTS[i] for i in rng.integers(len(INSULTS), size=factors["insults"])]
  if factors["motivational"]:
    words.append(MOTIVATION[rng.integers(len(MOTIVATION))])
  words += [FILLERS[i] for i in rng.integers(len(FILLERS), size=rng.integers(0, 3))]
  order = [0, 1] + list(1 + 1 + rng.permutation(len(words) - 2))
  text = " ".join(words[i] for i in order)
  if factors["sarcasm_tag"] and factors["image_mood"] != factors["text_mood"]:
    text += " /s"
  if rng.random() < 0.3:  # a line break, as OCR of two caption lines gives
    cut = text.find(" ", len(text) // 2)
    text = text if cut < 0 else text[:cut] + "\n" + text[cut + 1:]
  return text


def _star(draw: ImageDraw.ImageDraw, cx: float, cy: float, radius: float) -> None:
  points = []
  for k in range(10):
    r = radius if k % 2 == 0 else radius * 0.45
    angle = np.pi / 2 + k * np.pi / 5
    points.append((cx + r * np.cos(angle), cy - r * np.sin(angle)))
  draw.polygon(points, fill=_STAR_COLOUR)


def _image(rng: np.random.Generator, factors: dict, text: str, size: int) -> Image.Image:
  """An RGB meme of size S x 5S/4: caption band on top, a face, `laughs` stars, noise. Adds
  what a detector would find to `factors`: 'objects' [(tag, (x1, y1, x2, y2))] and
  'image_shape' (H, W)."""
  height, width = size, size * 5 // 4
  background = tuple(int(v) for v in rng.integers(90, 200, 3))
  image = Image.new("RGB", (width, height), background)
  draw = ImageDraw.Draw(image)
  band = max(4, size // 6)
  draw.rectangle((0, 0, width, band), fill=(250, 250, 250))
  draw.text((2, 0), text.replace("\n", " ")[:40], fill=(0, 0, 0),
            font=ImageFont.load_default())
  mood = factors["image_mood"]
  radius = size * rng.uniform(0.2, 0.26)
  cx = width / 2 + size * rng.uniform(-0.08, 0.08)
  cy = band + (height - band) / 2 + size * rng.uniform(-0.05, 0.05)
  face = np.clip(np.array(_FACE_COLOURS[mood]) + rng.integers(-15, 16, 3), 0, 255)
  draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius),
               fill=tuple(int(v) for v in face), outline=(20, 20, 20))
  eye = max(1.0, radius * 0.12)
  for dx in (-0.35, 0.35):
    ex, ey = cx + dx * radius, cy - 0.25 * radius
    draw.ellipse((ex - eye, ey - eye, ex + eye, ey + eye), fill=(20, 20, 20))
  mouth = (cx - 0.5 * radius, cy + 0.05 * radius, cx + 0.5 * radius, cy + 0.6 * radius)
  line_width = max(1, int(radius * 0.12))
  if mood == 2:
    draw.arc(mouth, 20, 160, fill=(20, 20, 20), width=line_width)
  elif mood == 0:
    draw.arc((mouth[0], mouth[1] + 0.4 * radius, mouth[2], mouth[3] + 0.4 * radius), 200, 340,
             fill=(20, 20, 20), width=line_width)
  else:
    draw.line((mouth[0], cy + 0.4 * radius, mouth[2], cy + 0.4 * radius), fill=(20, 20, 20),
              width=line_width)
  corners = rng.permutation(4)[:factors["laughs"]]
  objects = [("text", (0, 0, width, band)), ("face", (cx - radius, cy - radius, cx + radius,
                                                      cy + radius))]
  for corner in corners:
    sx = width * (0.14 if corner % 2 == 0 else 0.86)
    sy = band + (height - band) * (0.25 if corner < 2 else 0.78)
    _star(draw, sx, sy, size * 0.1)
    objects.append(("star", (sx - size * 0.1, sy - size * 0.1, sx + size * 0.1, sy + size * 0.1)))
  factors["objects"] = [(tag, tuple(float(v) for v in box)) for tag, box in objects]
  factors["image_shape"] = (height, width)
  pixels = np.asarray(image, np.float32) + rng.normal(0, 5.0, (height, width, 3))
  return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))


def draw_meme(rng: np.random.Generator, image_size: int) -> tuple[dict, str, Image.Image]:
  """One synthetic meme: (hidden factors, OCR text, RGB image of size S x 5S/4)."""
  factors = meme_factors(rng)
  text = _text(rng, factors)
  return factors, text, _image(rng, factors, text, image_size)


def _noisy(rng: np.random.Generator, labels: dict, label_noise: float) -> dict:
  """Each label replaced by a uniformly drawn class with probability `label_noise`."""
  return {k: (int(rng.integers(len(LABEL_VOCABULARIES[k]))) if rng.random() < label_noise
              else v) for k, v in labels.items()}


def write_synthetic_memes(directory: str | os.PathLike, *, num_train: int, num_val: int,
                          num_test: int, image_size: int, label_noise: float, seed: int,
                          log: Callable[[str], None] = print) -> str:
  """Writes (or reuses) a synthetic Memotion 3 release in `directory` (module docstring).

  Args:
    directory: output directory (created if needed); it receives `memotion3/` and `image/`.
    num_train, num_val, num_test: memes per split (the test split has no labels).
    image_size: S, the image height (width 5S/4).
    label_noise: probability that a label is replaced by a uniformly drawn class.
    seed: random seed; the output is a deterministic function of all arguments.
    log: progress printer.

  Returns:
    `directory`. A marker file written last makes it complete; a complete directory with the
    same settings is reused.
  """
  directory = os.fspath(directory)
  settings = synthetic_settings(num_train=num_train, num_val=num_val, num_test=num_test,
                                image_size=image_size, label_noise=label_noise, seed=seed)
  if cache.is_complete(directory, settings):
    log(f"synthetic memes: reusing {directory}")
    return directory
  if min(num_train, num_val) < 1 or num_test < 0 or image_size < 16 or not 0 <= label_noise <= 1:
    raise ValueError(f"need num_train, num_val >= 1, num_test >= 0, image_size >= 16 and "
                     f"0 <= label_noise <= 1; got {num_train}, {num_val}, {num_test}, "
                     f"{image_size}, {label_noise}")
  marker = os.path.join(directory, cache.MARKER_FILE)
  if os.path.exists(marker):  # another set's: it stops marking this directory while we write
    os.remove(marker)
  os.makedirs(os.path.join(directory, "memotion3"), exist_ok=True)
  counts = dict(train=num_train, val=num_val, test=num_test)
  for split, seq in zip(SPLITS, np.random.SeedSequence(int(seed)).spawn(len(SPLITS))):
    rng = np.random.default_rng(seq)
    os.makedirs(os.path.join(directory, "image", split), exist_ok=True)
    rows = []
    for i in range(counts[split]):
      factors, text, image = draw_meme(rng, image_size)
      image_path = os.path.join(directory, "image", split, f"{i}.jpg")
      image.save(image_path, quality=92)
      regions.write_regions(image_path, *regions.synthetic_detections(
          factors, np.random.default_rng([int(seed), len(rows), SPLITS.index(split)])))
      url = f"https://memes.invalid/{split}/{i}.jpg"
      if split == "test":
        rows.append((str(i), url, text))
        continue
      labels = _noisy(rng, labels_of(factors), label_noise)
      rows.append((str(i), url) + tuple(LABEL_VOCABULARIES[k][labels[k]] for k in (
          "humour", "sarcasm", "offensive", "motivational", "sentiment")) + (text,))
    with open(os.path.join(directory, "memotion3", f"{split}.csv"), "w", newline="",
              encoding="utf-8") as f:
      writer = csv.writer(f, delimiter="\t")
      writer.writerow(TEST_HEADER if split == "test" else HEADER)
      writer.writerows(rows)
  cache.write_marker(directory, settings)
  log(f"synthetic memes: wrote {num_train} train + {num_val} val + {num_test} test memes to "
      f"{directory}")
  return directory
