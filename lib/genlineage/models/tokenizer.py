"""A CLIP tokenizer built offline from a caption corpus.

No tokenizer can be downloaded here, so the tiny family gets one made from its own captions: the
byte-level alphabet of CLIP plus one BPE merge chain per corpus word, so every corpus word is a
single token and anything else falls back to characters. It is a real ``CLIPTokenizer``, saved
and loaded the way SD-v1.5's is, so the paper profile swaps in the checkpoint's own tokenizer
with no code change.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

from transformers import CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
_WORD = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+", re.UNICODE)


def corpus_words(captions: Iterable[str], min_count: int = 1) -> list[str]:
    """Words as CLIP's pre-tokenizer splits them, most frequent first (ties alphabetical)."""
    counts = Counter(w for c in captions for w in _WORD.findall(c.lower()))
    return sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))


def build_clip_tokenizer(captions: Iterable[str], max_length: int) -> CLIPTokenizer:
    """A CLIPTokenizer whose vocabulary holds every word of ``captions`` as one token."""
    byte_encoder = bytes_to_unicode()
    alphabet = list(byte_encoder.values())
    vocab: dict[str, int] = {}
    for char in alphabet:
        vocab.setdefault(char, len(vocab))
    for char in alphabet:
        vocab.setdefault(char + "</w>", len(vocab))
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for word in corpus_words(captions):
        symbols = ["".join(byte_encoder[b] for b in ch.encode()) for ch in word]
        symbols[-1] += "</w>"
        current = symbols[0]
        for symbol in symbols[1:]:
            pair = (current, symbol)
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
            current += symbol
            vocab.setdefault(current, len(vocab))
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
