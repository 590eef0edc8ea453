"""Write tests/golden/input_policy.json: what Python does with awkward input, for serve/js to match exactly.

For every case and each shipped bundle: the normalized text, the token ids and tokens, the unknown-character
count, and the greedy and beam-5 translations (or, for an input over the model's limit, Python's error). Run
``python tests/golden/make_golden.py`` after changing the tokenizer or a bundle; tests/test_js.py fails while the
committed file differs from what this produces. Needs no torch (``serve.Translator``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("input_policy.json")
BUNDLES = ("en-de", "de-en")
CASES = {
    "bom at the start": "\ufeffTwo dogs play in the snow.",
    "bom in the middle": "Two dogs\ufeff play in the snow.",
    "bom alone": "\ufeff",
    "combining acute, NFD": "A man drinks coffee in a Cafe\u0301.",
    "combining acute, NFC": "A man drinks coffee in a Caf\u00e9.",
    "umlauts, NFD": "Zwei Ma\u0308nner spielen u\u0308ber der Stra\u00dfe mit O\u0308l.",
    "umlauts, NFC": "Zwei M\u00e4nner spielen \u00fcber der Stra\u00dfe mit \u00d6l.",
    "combining mark with no composed form": "A q\u0301 dog.",
    "hangul jamo composed by NFC": "A dog \u1100\u1161 runs.",
    "zero-width space": "Two\u200bdogs play.",
    "zero-width non-joiner, joiner, word joiner": "A\u200cdog\u200druns\u2060fast.",
    "right-to-left and left-to-right marks": "\u200fTwo dogs\u200e play.",
    "tab, newline, carriage return": "Two\tdogs\nplay  in the\r\nsnow. ",
    "bell control character": "Two dogs\u0007 play.",
    "unicode spaces (no-break, ideographic, line separator, next line)": "\u00a0Two\u3000dogs\u2028play\u0085outside.",
    "typed end of sentence": "A dog </s> runs.",
    "typed padding": "<pad>",
    "typed start and unknown": "<s> <unk>",
    "emoji": "A dog \U0001f642 runs.",
    "emoji zwj sequence": "\U0001f468\u200d\U0001f469\u200d\U0001f467 on a beach.",
    "emoji with skin tone modifier": "\U0001f44d\U0001f3fd Good job.",
    "chinese with ideographic full stop": "\u4e24\u53ea\u72d7\u5728\u96ea\u5730\u91cc\u73a9\u3002\u300c\u300d",
    "arabic": "\u0643\u0644\u0628\u0627\u0646 \u064a\u0644\u0639\u0628\u0627\u0646 \u0641\u064a \u0627\u0644\u062b\u0644\u062c.",
    "empty": "",
    "whitespace only": " \t\n\u00a0 ",
    "over the model's limit": "a " * 1024,
}


def golden() -> dict:
    """The golden data, computed from the bundles under models/."""
    sys.path.insert(0, str(ROOT))
    from serve import Translator

    bundles = {}
    for pair in BUNDLES:
        translator = Translator(ROOT / "models" / pair / "onnx", workers=1)
        rows = []
        for name, text in CASES.items():
            ids, tokens, unknown = translator.tokenizer.encode_with_unknown(text)
            row = {"case": name, "normalized": translator.tokenizer.normalize(text), "ids": ids, "tokens": tokens,
                   "unknown_characters": unknown}
            try:
                row["greedy"], row["beam5"] = (translator.translate([text], beam_size=beam)[0].text for beam in (1, 5))
            except ValueError as error:
                row["error"] = str(error)
            rows.append(row)
        bundles[pair] = rows
    return {"cases": CASES, "bundles": bundles}


def dumps(data: dict) -> str:
    """The file's text: one case per line, non-ASCII escaped so that invisible characters stay visible."""
    cases = ",\n".join(f"    {json.dumps(name)}: {json.dumps(text)}" for name, text in data["cases"].items())
    bundles = ",\n".join(f'    {json.dumps(pair)}: [\n' + ",\n".join(f"      {json.dumps(row)}" for row in rows) + "\n    ]"
                         for pair, rows in data["bundles"].items())
    return f'{{\n  "cases": {{\n{cases}\n  }},\n  "bundles": {{\n{bundles}\n  }}\n}}\n'


if __name__ == "__main__":
    GOLDEN.write_text(dumps(golden()), encoding="utf-8")
    print(f"wrote {GOLDEN.relative_to(ROOT)}")
