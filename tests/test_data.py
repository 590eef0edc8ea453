import pytest

from conftest import write_corpus
from core.data import DataError, drop_empty, drop_long, read_corpus, read_lines, read_tsv, token_batches


def test_reads_aligned_files_and_crlf(tmp_path):
    (tmp_path / "a.en").write_bytes("One.\r\nTwo.\r\n".encode())
    (tmp_path / "a.de").write_bytes("Eins.\nZwei.\n".encode())
    assert read_corpus(tmp_path / "a.en", tmp_path / "a.de") == [("One.", "Eins."), ("Two.", "Zwei.")]


def test_mismatched_line_counts_are_an_error(tmp_path):
    source, target = write_corpus(tmp_path, [("a", "b"), ("c", "d")])
    target.write_text("b\n", encoding="utf-8")
    with pytest.raises(DataError, match="line counts differ.*2 lines.*1"):
        read_corpus(source, target)


def test_undecodable_bytes_name_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\nbad \xff byte\n")
    with pytest.raises(DataError, match=r"bad.txt:2: not valid UTF-8"):
        read_lines(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_lines(tmp_path / "nope")


def test_tsv(tmp_path):
    path = tmp_path / "corpus.tsv"
    path.write_text("Hello.\tHallo.\nBye.\tTschüss.\n", encoding="utf-8")
    assert read_corpus(path) == [("Hello.", "Hallo."), ("Bye.", "Tschüss.")]
    path.write_text("Hello.\tHallo.\nno tab here\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"corpus.tsv:2: expected 2 tab-separated columns, found 1"):
        read_tsv(path)


def test_empty_lines_are_dropped_and_counted():
    kept, report = drop_empty([("a", "b"), ("", "x"), ("y", "   "), ("c", "d")])
    assert kept == [("a", "b"), ("c", "d")]
    assert (report.kept, report.dropped) == (2, 2)
    assert "dropped 2 of 4 pairs" in str(report)


def test_over_long_pairs_are_dropped_and_counted():
    encoded = [([1] * 3, [1] * 3), ([1] * 9, [1] * 2), ([1] * 2, [1] * 10)]
    kept, report = drop_long(encoded, max_tokens=5)
    assert kept == [0]
    assert report.dropped == 2


def test_token_batches_cover_everything_within_budget():
    lengths = [(n % 7 + 1, n % 5 + 2) for n in range(100)]
    batches = token_batches(lengths, max_tokens=30, seed=3)
    assert sorted(i for batch in batches for i in batch) == list(range(100))
    for batch in batches:
        assert len(batch) * max(max(lengths[i]) for i in batch) <= 30
    assert token_batches(lengths, max_tokens=30, seed=3) == batches
    assert token_batches(lengths, max_tokens=30, seed=4) != batches


def test_one_over_long_example_still_gets_a_batch():
    assert token_batches([(50, 50), (2, 2)], max_tokens=10) == [[1], [0]]
