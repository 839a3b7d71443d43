"""A CLIP tokenizer built offline from a caption corpus.

No tokenizer can be downloaded here, so the tiny family gets one learnt from its own captions:
CLIP's byte-level alphabet plus byte-pair-encoding merges *learnt* on the corpus words, the way
BPE is trained, until every corpus word is one symbol. It is a real ``CLIPTokenizer``, saved and
loaded the way SD-v1.5's is, so the paper profile swaps in the checkpoint's own tokenizer with
no code change.

Why learnt, not one hand-made merge chain per word: BPE encodes a word by repeatedly applying
the *lowest-ranked* merge present anywhere in it, across all words' merges. Independent chains
conflict -- the chain of "he" (h+e) outranks the chain of "she" (s+h, then sh+e), so "she"
ended as ``s``, ``he`` -- and common words split into several tokens (45% of face captions
overflowed the 32-token encoder). Merges learnt greedily on the corpus are consistent by
construction: merge ``k`` is applied to every word at step ``k``, and a merge only creates
pairs containing its new symbol, which no earlier merge names; so when encoding, the
lowest-ranked applicable merge is always the one training applied next, and every corpus word
encodes exactly as it was trained, to one token. Words outside the corpus fall back to the
learnt sub-words, down to single bytes.

The corpus is the pre-training captions *plus the generators' lexicon* (every word the face and
scene templates can write): a small pre-training corpus (the smoke profile's 48 captions) does
not use every template word, and a domain caption with an unseen word would split it into
pieces and overflow the encoder. With the lexicon, every generated caption costs exactly one
token per pre-tokenizer piece plus BOS and EOS -- the count the generators' guards use.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Mapping

from transformers import CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"
# CLIP's pre-tokenizer pattern (lower-cased text): contractions, letter runs, single digits,
# punctuation runs. genlineage.data.faces.CLIP_WORDS repeats it for the caption guards (tested).
WORD_PATTERN = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+", re.UNICODE)

Pair = tuple[str, str]
Symbols = tuple[str, ...]


def pre_tokenize(text: str) -> list[str]:
    """The words CLIP's pre-tokenizer cuts ``text`` into (after lower-casing)."""
    return WORD_PATTERN.findall(text.lower())


def corpus_words(captions: Iterable[str], min_count: int = 1) -> list[str]:
    """Words as CLIP's pre-tokenizer splits them, most frequent first (ties alphabetical)."""
    counts = Counter(w for c in captions for w in pre_tokenize(c))
    return sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))


def word_symbols(word: str, byte_encoder: Mapping[int, str]) -> Symbols:
    """A word as CLIP's BPE starts from it: one symbol per UTF-8 byte, the last marked ``</w>``."""
    symbols = [byte_encoder[b] for b in word.encode("utf-8")]
    symbols[-1] += END_OF_WORD
    return tuple(symbols)


def _apply_merge(symbols: Symbols, pair: Pair) -> Symbols:
    """``symbols`` with every occurrence of ``pair`` fused, left to right (as BPE encodes)."""
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def _pair_counts(words: Mapping[Symbols, int]) -> Counter:
    counts: Counter = Counter()
    for symbols, n in words.items():
        for pair in zip(symbols, symbols[1:]):
            counts[pair] += n
    return counts


def learn_merges(words: Mapping[Symbols, int]) -> list[Pair]:
    """Greedy BPE training: fuse the most frequent adjacent pair until every word is one symbol.

    Ties go to the smallest pair, so the result is deterministic in the corpus. Running to the
    end (no vocabulary cap) is what makes every corpus word a single token.
    """
    merges: list[Pair] = []
    current = dict(words)
    while True:
        counts = _pair_counts(current)
        if not counts:
            return merges
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        fused: dict[Symbols, int] = {}
        for symbols, n in current.items():
            key = _apply_merge(symbols, best)
            fused[key] = fused.get(key, 0) + n
        current = fused


def generator_lexicon() -> list[str]:
    """Every word the generated domains' captions can contain (faces and scenes templates)."""
    from ..data import faces, scenes  # light (numpy, PIL); imported here to keep models/data apart

    return faces.caption_lexicon() + scenes.caption_lexicon()


def build_clip_tokenizer(captions: Iterable[str], max_length: int,
                         lexicon: Iterable[str] | None = None) -> CLIPTokenizer:
    """A CLIPTokenizer whose vocabulary holds every word of ``captions`` and ``lexicon`` as one token.

    ``lexicon`` (default: ``generator_lexicon()``) adds words the corpus may not use yet; it
    counts once per occurrence, like a caption. A caption of such words therefore costs exactly
    ``len(pre_tokenize(caption)) + 2`` tokens (BOS and EOS), which is what the caption
    generators' length guards count.
    """
    texts = list(captions) + list(generator_lexicon() if lexicon is None else lexicon)
    byte_encoder = bytes_to_unicode()
    alphabet = list(byte_encoder.values())
    vocab: dict[str, int] = {}
    for symbol in alphabet + [c + END_OF_WORD for c in alphabet]:
        vocab.setdefault(symbol, len(vocab))
    counts = Counter(w for c in texts for w in pre_tokenize(c))
    merges = learn_merges({word_symbols(w, byte_encoder): n for w, n in sorted(counts.items())})
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
