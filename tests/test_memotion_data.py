"""Tests for the Memotion label files: mmjax.data.tables (read_delimited, find_column),
mmjax.projects.memotion3.memotion_table (read_memotion) and
mmjax.projects.memotion3.synthetic_memes (write_synthetic_memes, labels_of, meme_factors)."""

import csv
import os

import numpy as np
import pytest
from PIL import Image

from mmjax.data import tables
from mmjax.projects.memotion3 import memotion_table, synthetic_memes
from mmjax.projects.memotion3.memotion_table import LABEL_VOCABULARIES, read_memotion

HEADER3 = ["", "Image_URL", "humour", "sarcastic", "offensive", "motivational", "overall", "ocr"]
HEADER1 = ["", "image_name", "text_ocr", "text_corrected", "humour", "sarcasm", "offensive",
           "motivational", "overall_sentiment"]
# (id, humour, sarcasm, offensive, motivational, sentiment, OCR text)
MEMES = [
    ("11", "funny", "general", "not_offensive", "motivational", "very_positive",
     'Keep "going"\nnow\tfriend  !'),
    ("12", "not_funny", "not_sarcastic", "slight", "not_motivational", "negative", "plain text"),
    ("13", "hilarious", "very_twisted", "hateful_offensive", "not_motivational", "neutral", "x y"),
    ("14", "very_funny", "twisted_meaning", "very_offensive", "motivational", "very_negative",
     "two\nlines"),
    ("15", "funny", "general", "not_offensive", "not_motivational", "positive", "last one"),
]
IDS = [m[0] for m in MEMES]
# The header is line 1; memes 11 and 14 span two physical lines each.
LINES = [3, 4, 5, 7, 8]
TEXTS = ['Keep "going" now friend !', "plain text", "x y", "two lines", "last one"]
LABELS = {
    "humour": [1, 0, 3, 2, 1],
    "sarcasm": [1, 0, 3, 2, 1],
    "offensive": [0, 1, 3, 2, 0],
    "motivational": [1, 0, 0, 1, 0],
    "sentiment": [4, 1, 2, 0, 3],
}
TASK_A = [2, 0, 1, 0, 2]
MOTIVATION = ("never give up", "keep going", "believe in yourself", "you can do it")
INSULTS = ("idiot", "loser", "clown", "stupid")
MOOD_PHRASES = (("worst day ever", "so sad", "i hate mondays", "this is terrible",
                 "crying inside"),
                ("it is what it is", "okay then", "just another day", "fine i guess",
                 "whatever"),
                ("best day ever", "so happy", "love this", "feeling great", "pure joy"))
SMALL = dict(num_train=40, num_val=12, num_test=6, image_size=32, label_noise=0.0)


def write_rows(path, header, rows, delimiter="\t", encoding="utf-8"):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", newline="", encoding=encoding) as f:
    writer = csv.writer(f, delimiter=delimiter)
    writer.writerow(header)
    writer.writerows(rows)
  return str(path)


def write_images(directory, names):
  os.makedirs(directory, exist_ok=True)
  for k, name in enumerate(names):
    Image.new("RGB", (16, 16), (10 * k, 100, 200)).save(os.path.join(directory, name))


def memotion3_rows(memes=MEMES):
  return [[i, f"https://memes.invalid/{i}.jpg", *labels, text] for i, *labels, text in memes]


def write_memotion3(root, rows=None, header=HEADER3, split="train"):
  """<root>/memotion3/<split>.csv (tab-separated) and <root>/image/<split>/<id>.jpg."""
  rows = memotion3_rows() if rows is None else rows
  write_images(os.path.join(root, "image", split), [f"{row[0]}.jpg" for row in rows])
  return write_rows(os.path.join(root, "memotion3", f"{split}.csv"), header, rows)


def config(root, **kwargs):
  return {"images": str(root / "image"), **kwargs}


def read_error(path, data_config, **kwargs):
  with pytest.raises(ValueError) as info:
    read_memotion(path, "train", data_config, **kwargs)
  return str(info.value)


# ------------------------------------------------------------------ read_memotion


def test_reads_memotion3_tab_separated_release(tmp_path):
  path = write_memotion3(tmp_path)
  with open(path, encoding="utf-8") as f:
    assert f.readline().startswith("\tImage_URL\thumour")  # really the release's format
  table = read_memotion(path, "train", config(tmp_path))
  assert len(table) == 5 and table.labelled and table.skipped == []
  assert table.ids == IDS
  assert table.images == [str(tmp_path / "image" / "train" / f"{i}.jpg") for i in IDS]
  assert table.texts == TEXTS
  assert table.lines == LINES
  assert sorted(table.labels) == sorted(LABELS)
  for label, expected in LABELS.items():
    assert table.labels[label].dtype == np.int32
    np.testing.assert_array_equal(table.labels[label], expected, err_msg=label)
  np.testing.assert_array_equal(table.task_a(), TASK_A)
  np.testing.assert_array_equal(table.task_c("humour"), LABELS["humour"])
  np.testing.assert_array_equal(table.task_b("humour"), [1, 0, 1, 1, 1])
  np.testing.assert_array_equal(table.task_b("motivational"), LABELS["motivational"])
  with pytest.raises(ValueError, match="sentiment"):
    table.task_c("sentiment")


def test_reads_memotion1_comma_separated_labels(tmp_path):
  rows = [[str(k), f"image_{m[0]}.jpg", f"raw ocr {k}", m[6], *m[1:6]]
          for k, m in enumerate(MEMES)]
  path = write_rows(tmp_path / "labels.csv", HEADER1, rows, delimiter=",")
  write_images(tmp_path / "images", [row[1] for row in rows])
  data_config = {"images": str(tmp_path / "images"), "image_pattern": "{id}",
                 "columns": {"id": "image_name", "text": "text_corrected"}}
  table = read_memotion(path, "train", data_config)
  assert table.ids == [f"image_{i}.jpg" for i in IDS]
  assert table.images == [str(tmp_path / "images" / f"image_{i}.jpg") for i in IDS]
  assert table.texts == TEXTS
  assert table.lines == LINES
  for label, expected in LABELS.items():
    np.testing.assert_array_equal(table.labels[label], expected, err_msg=label)
  np.testing.assert_array_equal(table.task_a(), TASK_A)


def test_images_default_to_the_release_layout(tmp_path):
  """No `images`: the release's `image/` folder beside the label file's `memotion3/`."""
  path = write_memotion3(tmp_path)
  table = read_memotion(path, "train", {"images": ""})
  assert table.images == [os.path.join(str(tmp_path), "image", "train", f"{i}.jpg") for i in IDS]
  assert read_memotion(path, "train", {}).images == table.images


def test_labels_match_ignoring_case_and_blanks(tmp_path):
  rows = memotion3_rows()
  rows[0][2], rows[1][6], rows[2][3] = "  Funny ", "NEGATIVE", " Very_Twisted\t"
  table = read_memotion(write_memotion3(tmp_path, rows), "train", config(tmp_path))
  for label, expected in LABELS.items():
    np.testing.assert_array_equal(table.labels[label], expected, err_msg=label)


def test_unknown_label_raises_or_is_skipped(tmp_path):
  rows = memotion3_rows()
  rows[2][2] = "lol"  # meme 13, line 5
  path = write_memotion3(tmp_path, rows)
  message = read_error(path, config(tmp_path))
  assert path in message and "line 5" in message
  assert "'humour'" in message and "'lol'" in message
  assert ", ".join(LABEL_VOCABULARIES["humour"]) in message

  table = read_memotion(path, "train", config(tmp_path, bad_rows="skip"))
  assert table.ids == ["11", "12", "14", "15"]
  assert table.lines == [3, 4, 7, 8]
  assert table.texts == [TEXTS[k] for k in (0, 1, 3, 4)]
  np.testing.assert_array_equal(table.labels["humour"], [1, 0, 2, 1])
  np.testing.assert_array_equal(table.task_a(), [2, 0, 0, 2])
  assert len(table.skipped) == 1
  line, reason = table.skipped[0]
  assert line == 5 and "'lol'" in reason


def test_all_rows_skipped_raises_no_memes(tmp_path):
  rows = memotion3_rows()
  for row in rows:
    row[6] = "meh"
  path = write_memotion3(tmp_path, rows)
  message = read_error(path, config(tmp_path, bad_rows="skip"))
  assert path in message and "no memes" in message and "5 rows skipped" in message


def test_missing_column_names_file_role_config_key_and_header(tmp_path):
  header = list(HEADER3)
  header[3] = "irony"
  path = write_memotion3(tmp_path, header=header)
  message = read_error(path, config(tmp_path))
  assert path in message
  assert "sarcasm" in message and "config.data.columns.sarcasm" in message
  assert str(header) in message


def test_empty_id_raises_or_is_skipped(tmp_path):
  rows = memotion3_rows()
  rows[1][0] = "  "  # line 4
  path = write_memotion3(tmp_path, rows)
  message = read_error(path, config(tmp_path))
  assert path in message and "line 4" in message and "empty meme id" in message
  table = read_memotion(path, "train", config(tmp_path, bad_rows="skip"))
  assert table.ids == ["11", "13", "14", "15"] and [s[0] for s in table.skipped] == [4]


def test_missing_image_raises_or_is_skipped(tmp_path):
  path = write_memotion3(tmp_path)
  missing = tmp_path / "image" / "train" / "14.jpg"  # line 7
  os.remove(missing)
  message = read_error(path, config(tmp_path))
  assert str(missing) in message and path in message and "line 7" in message

  table = read_memotion(path, "train", config(tmp_path, bad_rows="skip"))
  assert table.ids == ["11", "12", "13", "15"] and table.lines == [3, 4, 5, 8]
  assert [s[0] for s in table.skipped] == [7] and str(missing) in table.skipped[0][1]

  table = read_memotion(path, "train", config(tmp_path, check_images=False))
  assert table.ids == IDS and table.images[3] == str(missing) and table.skipped == []


def test_unreadable_image_raises_or_is_skipped(tmp_path):
  path = write_memotion3(tmp_path)
  garbage = tmp_path / "image" / "train" / "12.jpg"  # line 4
  garbage.write_bytes(b"this is not a JPEG at all" * 4)
  message = read_error(path, config(tmp_path))
  assert str(garbage) in message and path in message and "line 4" in message

  table = read_memotion(path, "train", config(tmp_path, bad_rows="skip"))
  assert table.ids == ["11", "13", "14", "15"]
  assert table.skipped[0][0] == 4 and str(garbage) in table.skipped[0][1]


def test_test_split_without_labels(tmp_path):
  rows = [[i, f"https://memes.invalid/{i}.jpg", text] for i, *_, text in MEMES]
  path = write_memotion3(tmp_path, rows, header=["", "Image_URL", "ocr"], split="test")
  table = memotion_table.read_memotion(path, "test", config(tmp_path), labelled=False)
  assert table.labels is None and not table.labelled
  assert table.ids == IDS and table.texts == TEXTS and table.lines == LINES
  assert table.images == [str(tmp_path / "image" / "test" / f"{i}.jpg") for i in IDS]
  for targets in (table.task_a, lambda: table.task_c("humour"), lambda: table.task_b("humour")):
    with pytest.raises(ValueError, match="no label"):
      targets()

  with pytest.raises(ValueError) as info:
    read_memotion(path, "test", config(tmp_path), labelled=True)
  assert path in str(info.value) and "config.data.columns.humour" in str(info.value)


def test_unlabelled_read_keeps_labels_that_are_there(tmp_path):
  path = write_memotion3(tmp_path)
  table = read_memotion(path, "train", config(tmp_path), labelled=False)
  assert table.labelled
  np.testing.assert_array_equal(table.task_a(), TASK_A)


def test_translation_column(tmp_path):
  header = HEADER3 + ["translation"]
  rows = memotion3_rows()
  translations = ["in english\nplease", "", "  ", "also   translated", ""]
  for row, translation in zip(rows, translations):
    row.append(translation)
  path = write_memotion3(tmp_path, rows, header=header)
  table = read_memotion(path, "train", config(tmp_path, columns={"translation": "translation"}))
  assert table.texts == ["in english please", "plain text", "x y", "also translated", "last one"]
  # The translation's line break moves meme 11's last line (and all later ones) down by one.
  assert table.lines == [4, 5, 6, 8, 9]
  table = read_memotion(path, "train", config(tmp_path))  # not configured: the OCR text
  assert table.texts == TEXTS

  other = write_memotion3(tmp_path / "other")
  message = read_error(other, config(tmp_path / "other", columns={"translation": "translation"}))
  assert other in message and "config.data.columns.translation" in message


def test_config_errors(tmp_path):
  path = write_memotion3(tmp_path)
  message = read_error(path, config(tmp_path, columns={"caption": "ocr"}))
  assert "config.data.columns.caption" in message
  message = read_error(path, config(tmp_path, vocabularies={"irony": ("a", "b")}))
  assert "config.data.vocabularies.irony" in message
  message = read_error(path, config(tmp_path, task_a_groups=(
      "very_negative,negative", "neutral,meh", "positive,very_positive")))
  assert "config.data.task_a_groups" in message and "'meh'" in message
  message = read_error(path, config(tmp_path, task_a_groups=(
      "very_negative", "neutral", "positive,very_positive")))
  assert "config.data.task_a_groups" in message and "'negative'" in message
  message = read_error(path, config(tmp_path, task_a_groups=("very_negative,negative",
                                                             "neutral,positive,very_positive")))
  assert "config.data.task_a_groups" in message
  message = read_error(path, config(tmp_path, bad_rows="ignore"))
  assert "config.data.bad_rows" in message and "'ignore'" in message


def test_custom_task_a_groups(tmp_path):
  path = write_memotion3(tmp_path)
  groups = ("very_negative", "Negative, neutral", "positive,very_positive")
  table = read_memotion(path, "train", config(tmp_path, task_a_groups=groups))
  np.testing.assert_array_equal(table.task_a(), [2, 1, 1, 0, 2])


def test_custom_vocabulary(tmp_path):
  rows = memotion3_rows()
  for row, value in zip(rows, ["yes", "no", " No", "YES", "no"]):
    row[5] = value
  path = write_memotion3(tmp_path, rows)
  table = read_memotion(path, "train", config(tmp_path, vocabularies={"motivational": ("no",
                                                                                      "yes")}))
  np.testing.assert_array_equal(table.labels["motivational"], [1, 0, 0, 1, 0])
  assert table.vocabularies["motivational"] == ("no", "yes")
  np.testing.assert_array_equal(table.labels["humour"], LABELS["humour"])
  message = read_error(path, config(tmp_path))  # the default vocabulary has no 'yes'
  assert "'yes'" in message and "not_motivational, motivational" in message


# ------------------------------------------------------------------ tables


def test_find_column():
  header = ["ID", "id", "Text", "b"]
  assert tables.find_column(header, "id") == 1  # exact before ignoring case
  assert tables.find_column(header, "ID") == 0
  assert tables.find_column(header, "text") == 2  # ignoring case
  assert tables.find_column(header, "TEXT") == 2
  assert tables.find_column(header, "#3") == 3
  assert tables.find_column(header, "#0") == 0
  assert tables.find_column(header, "b|text") == 3  # the alternatives in order
  assert tables.find_column(header, "text|b") == 2
  assert tables.find_column(header, "nope|B") == 3
  assert tables.find_column(header, " nope | b ") == 3
  assert tables.find_column(header, "#4|text") == 2  # beyond the header: the next alternative
  assert tables.find_column(header, "#4") is None
  assert tables.find_column(header, "nope|other") is None
  assert tables.find_column(HEADER3, memotion_table.DEFAULT_COLUMNS["id"]) == 0
  assert tables.find_column(HEADER3, memotion_table.DEFAULT_COLUMNS["sentiment"]) == 6
  assert tables.find_column(HEADER1, memotion_table.DEFAULT_COLUMNS["text"]) == 3


def test_read_delimited_bom_comma_and_tab_give_the_same(tmp_path):
  header = ["", "name", "text"]
  rows = [["1", "a.jpg", 'two\nlines, a "quote"\tand a tab'], ["2", "b.jpg", "plain"]]
  paths = [write_rows(tmp_path / "bom.csv", header, rows, ",", "utf-8-sig"),
           write_rows(tmp_path / "comma.csv", header, rows, ","),
           write_rows(tmp_path / "tab.csv", header, rows, "\t"),
           write_rows(tmp_path / "tab.tsv", header, rows, "\t")]
  with open(paths[0], "rb") as f:
    assert f.read(3) == b"\xef\xbb\xbf"
  for path in paths:
    assert tables.read_delimited(path) == (header, [(3, rows[0]), (4, rows[1])]), path


def test_read_delimited_skips_blank_lines_and_strips_the_header(tmp_path):
  path = tmp_path / "blank.csv"
  path.write_text(" id , text \n\n1,hello\n \n,\n2,\"a\n\nb\"\n\n", encoding="utf-8")
  header, rows = tables.read_delimited(str(path))
  assert header == ["id", "text"]
  assert rows == [(3, ["1", "hello"]), (8, ["2", "a\n\nb"])]


def test_read_delimited_errors(tmp_path):
  empty = tmp_path / "empty.csv"
  empty.write_text("", encoding="utf-8")
  with pytest.raises(ValueError, match="no header") as info:
    tables.read_delimited(str(empty))
  assert str(empty) in str(info.value)
  latin = tmp_path / "latin.csv"
  latin.write_bytes("a,b\n1,caf\u00e9\n".encode("latin-1"))
  with pytest.raises(ValueError, match="UTF-8") as info:
    tables.read_delimited(str(latin))
  assert str(latin) in str(info.value)
  with pytest.raises(FileNotFoundError):
    tables.read_delimited(str(tmp_path / "absent.csv"))


# ------------------------------------------------------------------ synthetic memes


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
  """(directory, log messages) of one small synthetic release, written once."""
  directory = tmp_path_factory.mktemp("synthetic") / "memes"
  messages = []
  assert synthetic_memes.write_synthetic_memes(directory, seed=5, log=messages.append,
                                               **SMALL) == str(directory)
  return directory, messages


def test_synthetic_layout_and_images(synthetic):
  directory, messages = synthetic
  assert len(messages) == 1 and "wrote" in messages[0]
  for split, count in (("train", 40), ("val", 12), ("test", 6)):
    assert (directory / "memotion3" / f"{split}.csv").is_file()
    names = sorted(os.listdir(directory / "image" / split))
    assert names == sorted(f"{i}{suffix}" for i in range(count) for suffix in (
        ".jpg", ".features.npy", ".boxes.npy", ".tags.json"))  # the regions for OSCAR
  for name in ("0.jpg", "5.jpg"):
    with Image.open(directory / "image" / "train" / name) as image:
      assert image.format == "JPEG" and image.mode == "RGB" and image.size == (40, 32)
  with open(directory / "memotion3" / "test.csv", encoding="utf-8") as f:
    assert f.readline().rstrip("\r\n").split("\t") == list(synthetic_memes.TEST_HEADER)


def test_synthetic_memes_read_back(synthetic):
  directory, _ = synthetic
  images = {"images": str(directory / "image")}
  for split, count in (("train", 40), ("val", 12)):
    table = read_memotion(directory / "memotion3" / f"{split}.csv", split, images)
    assert len(table) == count and table.ids == [str(i) for i in range(count)]
    assert table.images == [str(directory / "image" / split / f"{i}.jpg") for i in range(count)]
    for label, vocabulary in LABEL_VOCABULARIES.items():
      assert 0 <= table.labels[label].min() and table.labels[label].max() < len(vocabulary)
  test = read_memotion(directory / "memotion3" / "test.csv", "test", images, labelled=False)
  assert len(test) == 6 and test.labels is None
  with pytest.raises(ValueError, match="no column"):
    read_memotion(directory / "memotion3" / "test.csv", "test", images)


def test_synthetic_labels_follow_the_text(synthetic):
  """With label_noise=0 the labels are `labels_of` the factors, several visible in the text."""
  directory, _ = synthetic
  with open(directory / "memotion3" / "train.csv", newline="", encoding="utf-8") as f:
    raw = list(csv.reader(f, delimiter="\t"))[1:]
  for row in raw:
    for label, value in zip(("humour", "sarcasm", "offensive", "motivational", "sentiment"),
                            row[2:7]):
      assert value in LABEL_VOCABULARIES[label], (label, value)
  table = read_memotion(directory / "memotion3" / "train.csv", "train",
                        {"images": str(directory / "image")})
  for k, text in enumerate(table.texts):
    labels = {name: int(v[k]) for name, v in table.labels.items()}
    words = text.split()
    tagged = "/s" in words
    assert sum(words.count(w) for w in INSULTS) == labels["offensive"], text
    assert any(p in text for p in MOTIVATION) == bool(labels["motivational"]), text
    text_moods = [m for m, phrases in enumerate(MOOD_PHRASES) if any(p in text for p in phrases)]
    assert len(text_moods) == 1, text
    image_mood = labels["sentiment"] - text_moods[0]
    assert 0 <= image_mood <= 2, text
    mismatch = abs(image_mood - text_moods[0])
    assert not tagged or mismatch > 0, text
    assert labels["sarcasm"] == (3 if mismatch == 2 and tagged else mismatch), text
    if labels["sarcasm"] == 3:
      assert tagged, text
  assert any("\n" in row[7] for row in raw)  # some OCR texts span two lines...
  assert not any("\n" in t for t in table.texts)  # ...joined by the reader


def test_synthetic_reuse_and_determinism(synthetic, tmp_path):
  directory, _ = synthetic
  messages = []
  csvs = {s: (directory / "memotion3" / f"{s}.csv").read_bytes() for s in ("train", "val")}
  synthetic_memes.write_synthetic_memes(directory, seed=5, log=messages.append, **SMALL)
  assert len(messages) == 1 and "reusing" in messages[0]

  same = synthetic_memes.write_synthetic_memes(tmp_path / "same", seed=5, log=messages.append,
                                               **SMALL)
  other = synthetic_memes.write_synthetic_memes(tmp_path / "other", seed=6, log=messages.append,
                                                **SMALL)
  assert "wrote" in messages[-1]
  for split in ("train", "val", "test"):
    name = os.path.join("memotion3", f"{split}.csv")
    mine = (directory / name).read_bytes()
    assert mine == (tmp_path / "same" / name).read_bytes(), split
    assert mine != (tmp_path / "other" / name).read_bytes(), split
  assert (directory / "image" / "val" / "3.jpg").read_bytes() == (
      tmp_path / "same" / "image" / "val" / "3.jpg").read_bytes()
  assert csvs["train"] == (directory / "memotion3" / "train.csv").read_bytes()  # not rewritten
  assert same == str(tmp_path / "same") and other == str(tmp_path / "other")


def test_synthetic_rejects_bad_settings(tmp_path):
  with pytest.raises(ValueError, match="image_size"):
    synthetic_memes.write_synthetic_memes(tmp_path, **{**SMALL, "image_size": 8}, seed=0,
                                          log=lambda _: None)


def test_labels_of():
  def factors(image_mood, text_mood, laughs=0, insults=0, motivational=False, sarcasm_tag=False):
    return dict(image_mood=image_mood, text_mood=text_mood, laughs=laughs, insults=insults,
                motivational=motivational, sarcasm_tag=sarcasm_tag)

  assert synthetic_memes.labels_of(factors(0, 0)) == dict(
      humour=0, sarcasm=0, offensive=0, motivational=0, sentiment=0)
  assert synthetic_memes.labels_of(factors(2, 1, laughs=3, insults=2, motivational=True)) == dict(
      humour=3, sarcasm=1, offensive=2, motivational=1, sentiment=3)
  assert synthetic_memes.labels_of(factors(0, 2, sarcasm_tag=False))["sarcasm"] == 2
  assert synthetic_memes.labels_of(factors(0, 2, sarcasm_tag=True))["sarcasm"] == 3
  assert synthetic_memes.labels_of(factors(2, 0, sarcasm_tag=True)) == dict(
      humour=0, sarcasm=3, offensive=0, motivational=0, sentiment=2)
  assert synthetic_memes.labels_of(factors(1, 2, sarcasm_tag=True))["sarcasm"] == 1
  assert synthetic_memes.labels_of(factors(2, 2, sarcasm_tag=True, insults=3)) == dict(
      humour=0, sarcasm=0, offensive=3, motivational=0, sentiment=4)


def test_meme_factors_give_valid_labels():
  rng = np.random.default_rng(0)
  for _ in range(50):
    factors = synthetic_memes.meme_factors(rng)
    assert sorted(factors) == ["image_mood", "insults", "laughs", "motivational", "sarcasm_tag",
                               "text_mood"]
    for label, index in synthetic_memes.labels_of(factors).items():
      assert 0 <= index < len(LABEL_VOCABULARIES[label]), (label, factors)
