"""Sentence splitting: the one rule every surface uses to translate a paragraph sentence by sentence.

The shipped models learned from single sentences (Multi30K captions, dictionary examples); given a paragraph they
drop or merge sentences and still look confident. :func:`split_sentences` cuts a text into sentences with
`sentencex <https://github.com/wikimedia/sentencex>`_ (Wikimedia's rule-based segmenter: per-language abbreviation
lists and terminators for about 300 languages, written in Rust, MIT; the PyPI package and the npm package come from
the same repository), so that each sentence is translated alone and the translations are joined with a space.
"""

from __future__ import annotations

import sentencex

DEFAULT_LANGUAGE = "en"  # sentencex's rules when a bundle names no source language


def split_sentences(text: str, language: str | None = None) -> list[str]:
    """The sentences of ``text`` in order, each stripped of the space around it; blank stretches (a paragraph
    break) are dropped, so no sentence is empty. ``language`` (a code such as "en" or "de", the bundle's source
    language) picks the abbreviation rules; an unknown code falls back to sentencex's defaults. A text with no
    sentence boundary (or only blanks) is one sentence: ``[text.strip()]``, or ``[]`` for a blank text."""
    sentences = [sentence.strip() for sentence in sentencex.segment(language or DEFAULT_LANGUAGE, text)]
    return [sentence for sentence in sentences if sentence]
