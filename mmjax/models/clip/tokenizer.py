"""CLIP byte-pair tokenization, offline.

Sources, in order:
  1. a checkpoint directory with `vocab.json` + `merges.txt` (what a downloaded or saved Hugging
     Face CLIP directory holds): transformers' CLIPTokenizer on those files;
  2. otherwise OpenAI's 49,408-token vocabulary as shipped inside the `instant-clip-tokenizer`
     wheel (MIT; numpy only; tokenizes like OpenAI's reference implementation).
Both give `<|startoftext|> tokens <|endoftext|>` padded or truncated to `context_length` (the EOT
token is kept when truncating) with an attention mask; e.g. "a photo of a cat" ->
[49406, 320, 1125, 539, 320, 2368, 49407].

Text is cleaned first (`clean_text`). With the optional `ftfy` package installed this is OpenAI's
reference cleaning (ftfy.fix_text, which NFC-normalizes too). Without it, text is only
NFC-normalized, exactly as transformers' CLIPTokenizer does (it never uses ftfy): decomposed
accents (e + U+0301, A + U+030A) and CJK give Hugging Face's ids, but ligatures ("ﬁ"),
full-width characters ("ＡＢＣ"), curly quotes and mojibake stay unfixed, so such text gets other
ids than with ftfy or OpenAI's reference (a warning says so once per process). Unlike Hugging
Face, both sources html-unescape as OpenAI's reference does, and the packaged vocabulary
lowercases a word-final capital sigma to "ς" as Python does (Hugging Face: "σ").
"""

import functools
import html
import logging
import os
import re
import unicodedata
from typing import Dict, Sequence

import numpy as np

try:
  import ftfy
except ImportError:  # optional: see the module docstring
  ftfy = None

SOT, EOT = 49406, 49407
# Unicode White_Space, as in transformers' normalizer; Python's \s also matches U+001C-U+001F.
_WHITESPACE = re.compile(r"[^\S\x1c-\x1f]+")
log = logging.getLogger("mmjax")


def clean_text(text: str) -> str:
  """OpenAI CLIP's basic + whitespace cleaning: ftfy.fix_text when ftfy is installed, else NFC
  normalization (as transformers' CLIPTokenizer; warned about once), then html-unescape (twice),
  collapse whitespace, strip; lowercasing is the tokenizer's job."""
  if ftfy is None:
    _warn_without_ftfy()
    text = unicodedata.normalize("NFC", text)
  else:
    text = ftfy.fix_text(text)
  return _WHITESPACE.sub(" ", html.unescape(html.unescape(text))).strip(" ")


@functools.cache
def _warn_without_ftfy() -> None:
  log.warning("ftfy is not installed: CLIP text is NFC-normalized only, as transformers' "
              "CLIPTokenizer does, so ligatures, full-width characters, curly quotes and "
              "mojibake tokenize differently from OpenAI's reference (pip install ftfy)")


class ClipTokenizer:
  """Callable: list of strings -> {'input_ids': int32 [B, L], 'attention_mask': int32 [B, L]}.

  Padding uses `pad_token_id` (EOT for OpenAI's tokenizer files, as transformers does), so
  pooling at the first EOT and the mask both stay correct.
  """

  def __init__(self, encode, *, sot: int, eot: int, pad: int, context_length: int,
               source: str):
    if context_length < 2:
      raise ValueError(f"context_length={context_length}: needs room for SOT and EOT")
    self._encode = encode
    self.sot_token_id, self.eot_token_id, self.pad_token_id = sot, eot, pad
    self.context_length = context_length
    self.source = source

  def encode(self, text: str) -> list:
    """BPE ids of one text without special tokens."""
    return list(self._encode(clean_text(text)))

  def __call__(self, texts: Sequence[str], context_length: int = 0) -> Dict[str, np.ndarray]:
    if isinstance(texts, str):
      texts = [texts]
    length = context_length or self.context_length
    ids = np.full((len(texts), length), self.pad_token_id, np.int32)
    mask = np.zeros((len(texts), length), np.int32)
    for row, text in enumerate(texts):
      tokens = [self.sot_token_id] + self.encode(text)[:length - 2] + [self.eot_token_id]
      ids[row, :len(tokens)] = tokens
      mask[row, :len(tokens)] = 1
    return {"input_ids": ids, "attention_mask": mask}

  def __repr__(self) -> str:
    return f"ClipTokenizer(source={self.source!r}, context_length={self.context_length})"


def _from_files(path: str, context_length: int) -> ClipTokenizer:
  from transformers import CLIPTokenizer  # pylint: disable=import-outside-toplevel
  hf = CLIPTokenizer.from_pretrained(path, local_files_only=True)
  sot, eot = hf.bos_token_id, hf.eos_token_id
  pad = hf.pad_token_id if hf.pad_token_id is not None else eot
  return ClipTokenizer(lambda text: hf.encode(text, add_special_tokens=False), sot=sot, eot=eot,
                       pad=pad, context_length=context_length,
                       source=os.path.join(path, "vocab.json"))


def _from_package(context_length: int) -> ClipTokenizer:
  try:
    import instant_clip_tokenizer  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError("no vocab.json/merges.txt given and the `instant-clip-tokenizer` package "
                      "(OpenAI's CLIP vocabulary) is not installed: pip install "
                      "instant-clip-tokenizer") from e
  bpe = instant_clip_tokenizer.Tokenizer()
  return ClipTokenizer(bpe.encode, sot=bpe.start_of_text(), eot=bpe.end_of_text(),
                       pad=bpe.end_of_text(), context_length=context_length,
                       source="instant-clip-tokenizer (OpenAI bpe_simple_vocab_16e6)")


def load_tokenizer(path: str = "", context_length: int = 77) -> ClipTokenizer:
  """The tokenizer of a checkpoint directory (vocab.json + merges.txt), else OpenAI's.

  Args:
    path: a Hugging Face CLIP directory, or '' for OpenAI's vocabulary. A directory without
      vocab.json/merges.txt falls back to OpenAI's vocabulary (CLIP checkpoints share it).
    context_length: L, the padded/truncated length (77 for every released CLIP).
  """
  if path and not os.path.isdir(path):
    raise FileNotFoundError(f"tokenizer directory {path!r} does not exist")
  if path and all(os.path.isfile(os.path.join(path, f)) for f in ("vocab.json", "merges.txt")):
    return _from_files(path, context_length)
  return _from_package(context_length)
