"""Parallel corpora: reading with strict checks, documented filters, and length-sorted token batching.

A corpus is either two plain-text files aligned by line (source and target) or one TSV file with two
tab-separated columns. Reading never silently misaligns: different line counts, bad UTF-8 and malformed TSV
rows raise :class:`DataError` naming the file and line. Two filters drop pairs and report how many:
pairs with an empty side (:func:`drop_empty`) and pairs longer than a token limit (:func:`drop_long`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

Pair = tuple[str, str]


class DataError(ValueError):
    """A corpus file that cannot be read as promised; the message names the file and line."""


def read_lines(path: str | Path) -> list[str]:
    """Read a UTF-8 text file as a list of lines without line endings (LF or CRLF)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with path.open("rb") as handle:
        return decode_lines(handle, str(path))


def decode_lines(handle: BinaryIO, name: str) -> list[str]:
    """Lines of a binary stream (a file, standard input) decoded as UTF-8; errors name ``name`` and the line."""
    lines = []
    for number, raw in enumerate(handle, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError(f"{name}:{number}: not valid UTF-8 ({error.reason} at byte {error.start})") from None
        lines.append(line.rstrip("\r\n"))
    return lines


def read_parallel(source_path: str | Path, target_path: str | Path) -> list[Pair]:
    """Read two line-aligned files into (source, target) pairs; their line counts must match."""
    sources, targets = read_lines(source_path), read_lines(target_path)
    if len(sources) != len(targets):
        raise DataError(
            f"line counts differ: {source_path} has {len(sources)} lines, {target_path} has {len(targets)}; "
            "the files must be aligned line by line"
        )
    return list(zip(sources, targets))


def read_tsv(path: str | Path) -> list[Pair]:
    """Read a TSV file whose every line is ``source<TAB>target``."""
    pairs = []
    for number, line in enumerate(read_lines(path), start=1):
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(f"{path}:{number}: expected 2 tab-separated columns, found {len(fields)}")
        pairs.append((fields[0], fields[1]))
    return pairs


def read_corpus(source_path: str | Path, target_path: str | Path | None = None) -> list[Pair]:
    """Two aligned files, or one TSV file when target_path is None."""
    return read_tsv(source_path) if target_path is None else read_parallel(source_path, target_path)


@dataclass(frozen=True)
class FilterReport:
    kept: int
    dropped: int
    reason: str

    def __str__(self) -> str:
        return f"dropped {self.dropped} of {self.kept + self.dropped} pairs ({self.reason})"


def drop_empty(pairs: Sequence[Pair]) -> tuple[list[Pair], FilterReport]:
    """Drop pairs whose source or target is empty or only whitespace."""
    kept = [pair for pair in pairs if pair[0].strip() and pair[1].strip()]
    return kept, FilterReport(len(kept), len(pairs) - len(kept), "empty source or target")


def drop_long(
    encoded: Sequence[tuple[list[int], list[int]]], max_tokens: int
) -> tuple[list[int], FilterReport]:
    """Indices of encoded pairs whose sides both have at most max_tokens tokens (special tokens included)."""
    kept = [i for i, (source, target) in enumerate(encoded) if len(source) <= max_tokens and len(target) <= max_tokens]
    return kept, FilterReport(len(kept), len(encoded) - len(kept), f"longer than {max_tokens} tokens")


def token_batches(
    lengths: Sequence[tuple[int, int]], max_tokens: int, seed: int | None = None
) -> list[list[int]]:
    """Group example indices into batches of at most max_tokens padded tokens.

    Examples are sorted by (target, source) length so that a batch holds similar lengths and little padding;
    a batch's cost is its size times its longest side. With a seed, ties are broken randomly and the batch
    order is shuffled (for training); without, the order is deterministic (for evaluation).
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    rng = random.Random(seed)
    tiebreak = [rng.random() for _ in lengths] if seed is not None else list(range(len(lengths)))
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i][1], lengths[i][0], tiebreak[i]))
    batches: list[list[int]] = []
    batch: list[int] = []
    longest = 0
    for index in order:
        longest_with = max(longest, *lengths[index])
        if batch and longest_with * (len(batch) + 1) > max_tokens:
            batches.append(batch)
            batch, longest_with = [], max(lengths[index])
        batch.append(index)
        longest = longest_with
    if batch:
        batches.append(batch)
    if seed is not None:
        rng.shuffle(batches)
    return batches
