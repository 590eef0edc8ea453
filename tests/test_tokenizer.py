import pytest

from conftest import CORPUS, tiny_config
from core.tokenizer import SPECIAL_TOKENS, Tokenizer


def test_special_tokens_have_the_config_ids(tokenizer):
    config = tiny_config(vocab_size=tokenizer.vocab_size)
    assert [tokenizer.id_to_token(i) for i in range(4)] == list(SPECIAL_TOKENS)
    assert (config.pad_id, config.bos_id, config.eos_id, config.unk_id) == (0, 1, 2, 3)
    tokenizer.check_compatible(config)
    with pytest.raises(ValueError, match="tokens"):
        tokenizer.check_compatible(tiny_config(vocab_size=tokenizer.vocab_size + 1))


@pytest.mark.parametrize("text", [text for pair in CORPUS for text in pair] + [
    "Fußball, Café, naïve über 9:30!",
    "A dog (brown) runs—fast; doesn't stop?",
    "Zwei Männer spielen 2 Spiele.",
])
def test_round_trip_of_ordinary_text(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_whitespace_collapses_as_documented(tokenizer):
    text = "  A  man\trides\n a bike.  "
    assert tokenizer.normalize(text) == "A man rides a bike."
    assert tokenizer.decode(tokenizer.encode(text)) == "A man rides a bike."


def test_unknown_characters_never_crash(tokenizer):
    ids = tokenizer.encode("A man ☃ rides 日本 a bike 🚲.")
    assert 3 in ids  # <unk>
    assert tokenizer.decode(ids) == "A man rides a bike ."
    assert tokenizer.encode("") == []


def test_tokens_mark_word_starts(tokenizer):
    assert tokenizer.tokenize("A man.")[0].startswith("\u2581")


def test_save_and_load(tokenizer, tmp_path):
    path = tokenizer.save(tmp_path)
    assert path.name == "tokenizer.json"
    loaded = Tokenizer.load(tmp_path)
    assert loaded.encode("Zwei Hunde spielen.") == tokenizer.encode("Zwei Hunde spielen.")
    with pytest.raises(FileNotFoundError):
        Tokenizer.load(tmp_path / "missing")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a valid tokenizer"):
        Tokenizer.load(tmp_path / "bad.json")


def test_typed_special_tokens_are_ordinary_text(tokenizer, tmp_path):
    ids = tokenizer.encode("A man </s> rides <pad> <s> <unk>")
    assert not set(ids) & {0, 1, 2}
    assert tokenizer.decode([3, 0, 1, 2] + tokenizer.encode("A man")) == "A man"  # specials vanish on decoding
    path = tokenizer.save(tmp_path)
    assert '"added_tokens": []' in path.read_text(encoding="utf-8").replace("\n", "").replace("  ", "")


def test_old_files_that_match_special_tokens_in_text_are_converted_on_load(tokenizer, tmp_path):
    import json

    spec = json.loads(tokenizer._tokenizer.to_str())
    spec["added_tokens"] = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                             "normalized": False, "special": True} for i, t in enumerate(SPECIAL_TOKENS)]
    spec["decoder"] = spec["decoder"]["decoders"][-1]
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    from tokenizers import Tokenizer as HFTokenizer

    assert 2 in HFTokenizer.from_file(str(tmp_path / "tokenizer.json")).encode("a </s>").ids  # the old behaviour
    loaded = Tokenizer.load(tmp_path)
    assert 2 not in loaded.encode("a </s>") and loaded.decode([2, 3]) == ""
