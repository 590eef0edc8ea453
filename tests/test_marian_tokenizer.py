"""The Marian tokenizer kind (core.tokenizer.MarianTokenizer) against transformers' MarianTokenizer, on SentencePiece
models trained here: Multi30K sentences (when ../shared is present), hostile Unicode, a language token."""

import random

import pytest

pytest.importorskip("transformers", reason="needs transformers (the hf extra)")
pytest.importorskip("sentencepiece", reason="needs sentencepiece (the test extra)")

from conftest import MULTI30K  # noqa: E402
from core.tokenizer import MarianTokenizer, Tokenizer  # noqa: E402
from export.from_hf import UnrepresentableError, marian_tokenizer_spec  # noqa: E402
from marian import CORPUS_DE, CORPUS_EN, LANGUAGE_TOKEN, marian_tokenizer, write_marian_tokenizer  # noqa: E402

HOSTILE = [
    "A man </s> rides <unk> a <s> bike <pad>",  # typed special tokens are text (split_special_tokens)
    "Ein Hund läuft ☃☃☃ durch 雪雪 den Schnee.",  # runs of characters the model does not know
    "  two  spaces\tand a tab\u00a0non-breaking\u200bzero-width\u2009thin",
    "ｆｕｌｌ ｗｉｄｔｈ ＡＢＣ １２３",
    "e\u0301 combining a\u0308 marks",
    "emoji 😀😀👍🏽 🇩🇪 runs",
    "\ufeffa BOM first",
    "line\nbreaks\r\nand\ttabs",
    f"{LANGUAGE_TOKEN} A dog runs.",
    ">>xx<<A language token the vocabulary lacks",
    ">> not a token",
    "",
    " ",
    "x" * 40,
]


@pytest.fixture(scope="module")
def marian_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("marian-tokenizer")
    vocab = write_marian_tokenizer(folder, CORPUS_EN * 3, CORPUS_DE * 3)
    return folder, vocab


@pytest.fixture(scope="module")
def both(marian_folder, tmp_path_factory):
    folder, vocab = marian_folder
    out = tmp_path_factory.mktemp("ours")
    MarianTokenizer(marian_tokenizer_spec(folder / "source.spm", vocab)).save(out)
    ours = Tokenizer.load(out)  # the file's kind decides the class
    assert isinstance(ours, MarianTokenizer)
    return ours, marian_tokenizer(folder), vocab


def multi30k(count: int) -> list[str]:
    path = MULTI30K / "val.en"
    if not path.is_file():
        return []
    return path.read_text(encoding="utf-8").splitlines()[:count]


def test_encoding_equals_marian_tokenizer_on_hostile_text(both):
    ours, theirs, vocab = both
    for text in HOSTILE + CORPUS_EN:
        assert ours.encode(text) + [vocab["</s>"]] == theirs(text)["input_ids"], text


def test_encoding_equals_marian_tokenizer_on_multi30k(both):
    sentences = multi30k(300)
    if not sentences:
        pytest.skip(f"Multi30K is not at {MULTI30K}")
    ours, theirs, vocab = both
    assert [ours.encode(text) + [vocab["</s>"]] for text in sentences] == theirs(sentences)["input_ids"]


def test_what_the_vocabulary_lacks_is_unk_and_counted(both):
    ours, _, vocab = both
    ids, tokens, unknown = ours.encode_with_unknown("A dog ☃☃☃ runs.")
    assert ids.count(vocab["<unk>"]) == 1 and unknown == 3  # one piece for the run, three characters
    assert tokens == [ours.id_to_token(i) for i in ids]
    assert ours.encode_with_unknown("A dog runs.")[2] == 0
    assert ours.encode(f"{LANGUAGE_TOKEN} A dog")[0] == vocab[LANGUAGE_TOKEN]  # kept whole


def test_decoding_equals_marian_tokenizer(both):
    ours, theirs, vocab = both
    generator = random.Random(0)
    for _ in range(300):
        ids = generator.choices(range(len(vocab)), k=generator.randint(0, 14))
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True), ids
    for text in CORPUS_EN:
        ids = ours.encode(text)
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True)


def test_truncate_cuts_before_a_word(both):
    ours, _, _ = both
    text = "Two young children are playing on the grass."
    cut = ours.truncate(text, 6)
    assert text.startswith(cut) and len(ours.encode(cut)) <= 6 and cut and not cut.endswith(" ")
    assert ours.truncate(text, 100) == text


def test_the_config_must_name_the_tokenizers_special_ids(both):
    from core.config import TransformerConfig

    ours, _, vocab = both
    pad, eos, unk = vocab["<pad>"], vocab["</s>"], vocab["<unk>"]
    ours.check_compatible(TransformerConfig(vocab_size=len(vocab), pad_id=pad, bos_id=pad, eos_id=eos, unk_id=unk))
    with pytest.raises(ValueError, match="special ids"):
        ours.check_compatible(TransformerConfig(vocab_size=len(vocab)))


def test_what_the_rebuild_cannot_reproduce_is_refused(marian_folder, tmp_path):
    folder, vocab = marian_folder
    with pytest.raises(UnrepresentableError, match="no <pad>"):
        marian_tokenizer_spec(folder / "source.spm", {k: v for k, v in vocab.items() if k != "<pad>"})
    import io

    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS_EN * 3), model_writer=model,
                                             vocab_size=60, model_type="bpe", minloglevel=2)
    (tmp_path / "bpe.spm").write_bytes(model.getvalue())
    with pytest.raises(UnrepresentableError, match="not a Unigram"):
        marian_tokenizer_spec(tmp_path / "bpe.spm", vocab)
