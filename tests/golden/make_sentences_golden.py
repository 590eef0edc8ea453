"""Write tests/golden/sentences.json: where Python's serve.sentences cuts awkward texts, for serve/js to match.

For every case: the language and Python's ``split_sentences``; for each shipped bundle, ``translate_paragraphs`` of a
paragraph (greedy and beam 5): its text and token ids. Run ``python tests/golden/make_sentences_golden.py`` after
changing serve/sentences.py, sentencex's version or a bundle; tests/test_js.py fails while the committed file differs
from what this produces. Needs no torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("sentences.json")
BUNDLES = ("en-de", "de-en")
PARAGRAPHS = {
    "en-de": "Two young children play with a red ball on the grass. A man in a blue jacket rides a bicycle down a "
             "busy street. A dog runs through the snow! Is the woman cold? Two men sit on a bench.",
    "de-en": "Zwei Hunde spielen im Schnee. Dr. Müller fährt z.B. Fahrrad. Ein Mann sitzt auf einer Bank!",
}
CASES = {
    "five sentences, three terminators": ("en", PARAGRAPHS["en-de"]),
    "english abbreviations and times": ("en", "Dr. Smith met Mr. Jones at 3 p.m. on Jan. 5th. They talked about the "
                                               "U.S. economy, e.g. jobs."),
    "german abbreviations and ordinals": ("de", "Zwei Hunde spielen im Schnee. Dr. Müller kommt z.B. am 3. Mai. Das "
                                                "ist gut!"),
    "german quotes": ("de", "Er sagte: \u201eKomm her.\u201c Dann ging er. Ca. 5 Min. später kam sie."),
    "quotes, ellipsis, ?!, parentheses": ("en", 'He said "Stop." Then he left... Really?! Yes (mostly). Next.'),
    "no boundary": ("en", "No boundary here"),
    "paragraph breaks": ("en", "First line\n\nSecond paragraph without stop\nThird line."),
    "numbers and domains": ("en", "Version 1.5 is out. Visit example.com. Done."),
    "no space after the stop": ("de", "Ein Mann fährt Fahrrad.Eine Frau läuft."),
    "tabs, no-break and ideographic spaces": ("en", "A dog runs.   \t Another dog sleeps.\u00a0A cat sits.\u3000Done."),
    "separators python strips": ("en", "\x1cA dog runs.\x1f A cat sits.\x1e"),
    "byte order mark and zero-width space": ("en", "\ufeffA dog runs. \u200bA cat sits."),
    "french": ("fr", "M. Dupont est arrivé. Il fait beau !"),
    "full-width and cjk": ("en", "ＡＢＣ。 日本語の文です。これも。 Emoji 👍🏽👍🏽. End."),
    "czech": ("cs", "Pan Novák přišel. Bylo to např. včera."),
    "unknown language code": ("xx", "A dog runs. A cat sits."),
    "blank": ("en", " \n\t "),
    "empty": ("en", ""),
}


def golden() -> dict:
    sys.path.insert(0, str(ROOT))
    from serve import Translator
    from serve.sentences import split_sentences, translate_paragraphs

    cases = {name: {"language": language, "text": text, "sentences": split_sentences(text, language)}
             for name, (language, text) in CASES.items()}
    bundles = {}
    for pair in BUNDLES:
        translator = Translator(ROOT / "models" / pair / "onnx")
        bundles[pair] = {"paragraph": PARAGRAPHS[pair], **{
            f"beam {beam}": {"text": result.text, "token_ids": result.token_ids}
            for beam in (1, 5) for result in translate_paragraphs(translator, [PARAGRAPHS[pair]], beam_size=beam)}}
    return {"cases": cases, "bundles": bundles}


def dumps(data: dict) -> str:
    """The file's text: one case per line, non-ASCII escaped so that invisible characters stay visible."""
    cases = ",\n".join(f"    {json.dumps(name)}: {json.dumps(case)}" for name, case in data["cases"].items())
    bundles = ",\n".join(f"    {json.dumps(pair)}: {json.dumps(rows)}" for pair, rows in data["bundles"].items())
    return f'{{\n  "cases": {{\n{cases}\n  }},\n  "bundles": {{\n{bundles}\n  }}\n}}\n'


if __name__ == "__main__":
    GOLDEN.write_text(dumps(golden()), encoding="utf-8")
    print(f"wrote {GOLDEN}")
