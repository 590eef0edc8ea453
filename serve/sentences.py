"""Sentence splitting: the one rule every surface uses to translate a paragraph sentence by sentence.

The shipped models learned from single sentences (Multi30K captions, dictionary examples); given a paragraph they
drop or merge sentences and still look confident. :func:`split_sentences` cuts a text into sentences with
`sentencex <https://github.com/wikimedia/sentencex>`_ (Wikimedia's rule-based segmenter: per-language abbreviation
lists and terminators for about 300 languages, written in Rust, MIT; the PyPI package and the npm package come from
the same repository), so that each sentence is translated alone and the translations are joined with a space.
:func:`translate_paragraphs` is the Python API; ``python -m serve translate --split-sentences`` and the HTTP
parameter ``split_sentences`` (default false: one input, one search, as before) call it, and so does the demo.
"""

from __future__ import annotations

from collections.abc import Sequence

import sentencex

from core.search import Translation
from core.translator import BaseTranslator

DEFAULT_LANGUAGE = "en"  # sentencex's rules when a bundle names no source language


def split_sentences(text: str, language: str | None = None) -> list[str]:
    """The sentences of ``text`` in order, each stripped of the space around it; blank stretches (a paragraph
    break) are dropped, so no sentence is empty. ``language`` (a code such as "en" or "de", the bundle's source
    language) picks the abbreviation rules; an unknown code falls back to sentencex's defaults. A text with no
    sentence boundary (or only blanks) is one sentence: ``[text.strip()]``, or ``[]`` for a blank text."""
    sentences = [sentence.strip() for sentence in sentencex.segment(language or DEFAULT_LANGUAGE, text)]
    return [sentence for sentence in sentences if sentence]


def split_texts(texts: Sequence[str], language: str | None = None) -> tuple[list[str], list[int]]:
    """Every text's sentences (:func:`split_sentences`) in one list, and how many each text gave; a blank text
    keeps one empty sentence (it translates to "", as a blank text does), so every text has at least one."""
    sentences, counts = [], []
    for text in texts:
        found = split_sentences(text, language) or [""]
        sentences.extend(found)
        counts.append(len(found))
    return sentences, counts


def join_translations(texts: Sequence[str], translations: Sequence[Translation],
                      counts: Sequence[int]) -> list[Translation]:
    """Each text's sentence translations (``counts[i]`` of them, in order) as one :class:`core.search.Translation`:
    the texts joined with a space, the tokens, token ids and source tokens concatenated, ``unknown_characters``
    summed, ``score`` the sentences' mean score, ``confidence`` the least confident sentence's. ``hypotheses`` is
    empty: an n-best list, attention and beam records belong to single sentences."""
    joined, start = [], 0
    for text, count in zip(texts, counts):
        parts = translations[start:start + count]
        start += count
        confidences = [part.confidence for part in parts if part.confidence is not None]
        joined.append(Translation(
            source=text, text=" ".join(part.text for part in parts if part.text),
            tokens=[token for part in parts for token in part.tokens],
            token_ids=[token_id for part in parts for token_id in part.token_ids],
            score=sum(part.score for part in parts) / len(parts), hypotheses=[],
            source_tokens=[token for part in parts for token in part.source_tokens],
            unknown_characters=sum(part.unknown_characters for part in parts),
            confidence=min(confidences, key=lambda confidence: confidence.score, default=None)))
    return joined


def translate_paragraphs(translator: BaseTranslator, texts: Sequence[str], **options) -> list[Translation]:
    """``translator.translate(texts, **options)``, but each text split into sentences first (in the translator's
    source language), every sentence of every text searched in the same batches, and each text's translations
    joined (:func:`join_translations`). Options that belong to single sentences (``n_best`` above 1,
    ``return_attention``, ``record_beams``, ``return_trace``, ``target_prefix``) raise ValueError."""
    single = [name for name in ("return_attention", "record_beams", "return_trace", "target_prefix")
              if options.get(name)] + (["n_best"] if options.get("n_best", 1) != 1 else [])
    if single:
        raise ValueError(f"{', '.join(single)}: an option of single sentences, not of a text split into sentences")
    sentences, counts = split_texts(texts, getattr(translator, "source_lang", None))
    return join_translations(texts, translator.translate(sentences, **options), counts)
