"""Every generated caption fits its text encoder, and the offline tokenizer's BPE is consistent.

The captions are built the way stage 01 builds the datasets (``make_splits`` + ``role_entries``,
one caption per id from the generators, images not drawn) and tokenized with the tokenizer each
tiny base saves: ``build_clip_tokenizer`` on the pre-training corpus, as ``build_base`` does,
through a ``save_pretrained`` / ``from_pretrained`` round trip.
"""
from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

import pytest
from transformers import CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from genlineage.config import load_profile
from genlineage.data import faces, scenes
from genlineage.data.splits import ROLES, make_splits, parse_id, role_entries
from genlineage.models.tokenizer import (
    BOS, EOS, WORD_PATTERN, build_clip_tokenizer, corpus_words, generator_lexicon, pre_tokenize,
)

PROFILES = ("smoke", "tiny")
CAPTION_OF = {"faces": faces.face_caption, "scenes": scenes.scene_caption}


@lru_cache(maxsize=None)
def corpus_of(name: str) -> dict[str, tuple[str, ...]]:
    """``{"pretrain": captions, <domain>: captions}`` of profile ``name``, in folder order."""
    profile = load_profile(name)
    seed = int(profile.get("seed", 0))
    splits = make_splits(profile)

    def caption(item: str) -> str:
        generator, key = parse_id(item)
        return CAPTION_OF[generator](int(key), seed)

    out = {"pretrain": tuple(caption(i) for i in role_entries(splits, "pretrain"))}
    for domain in splits["domains"]:
        out[domain] = tuple(caption(i) for role in ROLES for i in role_entries(splits, domain, role))
    return out


def saved_tokenizer(captions, max_length: int, folder: Path) -> CLIPTokenizer:
    """What a base saves and a pipeline loads back."""
    build_clip_tokenizer(captions, max_length).save_pretrained(folder)
    return CLIPTokenizer.from_pretrained(folder)


def chain_tokenizer(captions, max_length: int) -> CLIPTokenizer:
    """The previous construction: one independent left-to-right merge chain per corpus word."""
    byte_encoder = bytes_to_unicode()
    vocab: dict[str, int] = {}
    for char in byte_encoder.values():
        vocab.setdefault(char, len(vocab))
    for char in byte_encoder.values():
        vocab.setdefault(char + "</w>", len(vocab))
    merges, seen = [], set()
    for word in corpus_words(captions):
        symbols = [byte_encoder[b] for b in word.encode()]
        symbols[-1] += "</w>"
        current = symbols[0]
        for symbol in symbols[1:]:
            if (current, symbol) not in seen:
                seen.add((current, symbol))
                merges.append((current, symbol))
            current += symbol
            vocab.setdefault(current, len(vocab))
    vocab[BOS], vocab[EOS] = len(vocab), len(vocab) + 1
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def n_tokens(tokenizer: CLIPTokenizer, texts) -> list[int]:
    return [len(ids) for ids in tokenizer(list(texts)).input_ids]


@pytest.mark.parametrize("name", PROFILES)
def test_every_caption_fits_its_bases_tokenizer(name, tmp_path):
    profile = load_profile(name)
    corpus = corpus_of(name)
    assert len(corpus) >= 3 and all(corpus.values())  # pre-training corpus and both domains
    for base, cfg in profile["models"]["bases"].items():
        max_length = int(cfg["tokenizer"]["max_length"])
        tokenizer = saved_tokenizer(corpus["pretrain"], max_length, tmp_path / base)
        assert tokenizer.model_max_length == max_length
        for part, captions in corpus.items():
            lengths = n_tokens(tokenizer, captions)
            too_long = [(n, c) for n, c in zip(lengths, captions) if n > max_length]
            assert not too_long, f"{name}/{base}/{part}: {len(too_long)} captions truncated, e.g. {too_long[0]}"
            # The generators' guard counts exactly what the tokenizer counts.
            assert lengths == [faces.caption_tokens(c) for c in captions], f"{name}/{base}/{part}"


@pytest.mark.parametrize("name", PROFILES)
def test_every_corpus_and_lexicon_word_is_one_token(name, tmp_path):
    corpus = corpus_of(name)["pretrain"]
    tokenizer = saved_tokenizer(corpus, 32, tmp_path)
    words = corpus_words(list(corpus) + generator_lexicon())
    assert len(words) > 100
    split = [w for w, n in zip(words, n_tokens(tokenizer, words)) if n != 3]  # BOS word EOS
    assert not split, f"words split into several tokens: {split[:10]}"
    ids = tokenizer(" ".join(words), add_special_tokens=False).input_ids
    assert tokenizer.convert_ids_to_tokens(ids) == [w + "</w>" for w in words]


def test_conflicting_merge_chains_are_resolved():
    """Planted conflict: the chain of "he" (h+e</w>) outranks "she"'s (s+h, sh+e</w>)."""
    captions = ["he he he", "she"]
    old = chain_tokenizer(captions, 8)
    assert old.tokenize("she") == ["s", "he</w>"]  # what broke 45% of the face captions
    new = build_clip_tokenizer(captions, 8, lexicon=[])
    assert new.tokenize("she") == ["she</w>"] and new.tokenize("he") == ["he</w>"]


def test_old_chain_tokenizer_would_have_truncated_the_tiny_corpus():
    corpus = corpus_of("tiny")
    old = chain_tokenizer(corpus["pretrain"], 32)
    over = sum(n > 32 for n in n_tokens(old, corpus["celeba"]))
    assert over > len(corpus["celeba"]) // 4  # the test above can fail: this tokenizer did


def test_lexicon_covers_every_generated_word():
    lexicon = set(corpus_words(generator_lexicon()))
    corpus = corpus_of("tiny")
    used = Counter(w for captions in corpus.values() for c in captions for w in pre_tokenize(c))
    assert not set(used) - lexicon, sorted(set(used) - lexicon)
    assert "zebra" not in lexicon


def test_unknown_words_fall_back_to_learnt_pieces():
    tokenizer = build_clip_tokenizer(["a red star"], 16, lexicon=[])
    assert tokenizer.tokenize("zebra") == ["z", "e", "b", "r", "a</w>"]
    assert tokenizer.tokenize("stars") != ["stars</w>"] and len(tokenizer.tokenize("stars")) >= 2


def test_guard_counts_like_the_tokenizer():
    assert faces.CLIP_WORDS.pattern == WORD_PATTERN.pattern  # the guard and CLIP split alike
    caption = "This man doesn't have any beard. He's clean-shaven, 8-bit!"
    assert faces.caption_words(caption) == len(re.findall(WORD_PATTERN, caption.lower())) == 18
    tokenizer = build_clip_tokenizer([caption], 40, lexicon=[])
    assert faces.caption_tokens(caption) == len(tokenizer(caption).input_ids) == 20


@pytest.mark.parametrize("name", PROFILES)
def test_guard_limit_agrees_with_every_text_encoder(name):
    for base, cfg in load_profile(name)["models"]["bases"].items():
        assert int(cfg["tokenizer"]["max_length"]) >= faces.MAX_CAPTION_TOKENS, (name, base)


def test_scene_guard_redraws_long_drafts():
    attrs = scenes.scene_attributes(3, 0)
    rng = lambda: scenes._streams(3, 0)[2]  # noqa: E731
    first = scenes.scene_caption_for(attrs, rng(), max_tokens=None)
    shortest = scenes.scene_caption_for(attrs, rng(), max_tokens=1)  # nothing fits: the shortest draft
    assert faces.caption_tokens(shortest) < faces.caption_tokens(first)
    assert scenes.scene_caption_for(attrs, rng()) == scenes.scene_caption(3, 0)
