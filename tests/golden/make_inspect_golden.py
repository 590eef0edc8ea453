"""Write tests/golden/inspect.json: what Python returns for what the in-browser inspector shows, for serve/js to match.

For each shipped bundle: translations with heads switched off (float32 search, the static page's default, and int8,
which it offers), their token ids, per-token log-probabilities and confidence; every attention weight of every kind
of a short sentence's translation (teacher-forced; finished or a partial hypothesis; heads off too); the input
policy's cut of over-long texts (serve/policy.py's fit_text with the demo's limits) and bad_character's messages.
serve/js/test/inspect.test.mjs compares serve/js with it; tests/test_static.py fails while the committed file differs
from what this produces. Needs no torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("inspect.json")
SENTENCES = {"en-de": ["Two dogs play in the snow.", "Quantum chromodynamics explains the strong interaction."],
             "de-en": ["Ein Mann fährt Fahrrad.", "Die Zentralbank erhöht den Leitzins."]}
HEADS_OFF = [[], ["cross.0.1", "encoder.1.2"], ["decoder.3.0", "cross.3.3", "cross.2.1"]]
FIT_TEXTS = {"fits": "A man rides a bike.",
             "over the token limit": " ".join(f"word{i % 10} dog" for i in range(60)),
             "over the character limit": "Dogs run. " * 250,
             "one long word": "x" * 400,
             "spaces and newlines": "Two  dogs\n" * 80}
BAD_TEXTS = ["Two dogs.", "Two\tdogs\r\n", "Two\u0007dogs", "a\u0000", "\U0001f642\u007f", "x\ud800y"]


def rounded(array) -> list:
    """float32 weights as JSON numbers with 7 significant digits."""
    return json.loads(json.dumps(array.tolist(), default=float), parse_float=lambda v: float(f"{float(v):.7g}"))


def golden() -> dict:
    sys.path.insert(0, str(ROOT))
    from core.search import Hypothesis, attention_of
    from core.heads import HeadMask
    from demo.handlers import LIMITS
    from serve import Translator
    from serve.policy import InputError, bad_character, fit_text

    bundles = {}
    for pair, sentences in SENTENCES.items():
        directory = ROOT / "models" / pair / "onnx"
        translators = {precision: Translator(directory, workers=1, precision=precision)
                       for precision in ("int8", "float32")}
        translations, attentions, fits = [], [], {}
        for text in sentences:
            for heads_off in HEADS_OFF:
                for precision, beam in (("int8", 5), ("float32", 1)):
                    (result,) = translators[precision].translate([text], beam_size=beam, heads_off=heads_off)
                    confidence = result.confidence
                    translations.append({"text": text, "precision": precision, "beam": beam, "heads_off": heads_off,
                                         "ids": list(result.hypotheses[0].token_ids),
                                         "token_log_probs": list(result.hypotheses[0].token_log_probs),
                                         "confidence": None if confidence is None else
                                         {"score": confidence.score, "label": confidence.label}})
                if text != sentences[0] or heads_off == HEADS_OFF[2]:
                    continue  # every weight of a short sentence, twice, keeps the file small
                # the attention of the int8 search's output, from the float32 teacher-forced graph
                ids = translations[-2]["ids"]
                translator = translators["float32"]
                source = translator.tokenizer.encode(text) + [translator.config.eos_id]
                for finished in (True, False):
                    chosen = Hypothesis(tuple(ids), 0.0, 0.0, finished)
                    mask = HeadMask.switched_off(heads_off, translator.config)
                    (attention,) = attention_of(translator.backend, translator.tokenizer, [source], [chosen], mask)
                    attentions.append({"text": text, "ids": ids, "finished": finished, "heads_off": heads_off,
                                       "source_tokens": attention.source_tokens,
                                       "target_tokens": attention.target_tokens,
                                       **{kind: rounded(getattr(attention, kind))
                                          for kind in ("encoder", "decoder", "cross")}})
        for name, text in FIT_TEXTS.items():
            for cut in (True, False):
                try:
                    fitted = fit_text(translators["int8"], text, LIMITS, cut=cut)
                    fits[f"{name}, cut={cut}"] = {"text": text, "cut": cut, "fitted": {
                        "text": fitted.text, "tokens": fitted.tokens, "chars_before": fitted.chars_before,
                        "tokens_before": fitted.tokens_before}}
                except InputError as error:
                    fits[f"{name}, cut={cut}"] = {"text": text, "cut": cut, "error": str(error)}
        bundles[pair] = {"translations": translations, "attentions": attentions, "fit": fits}
    return {"limits": {"max_chars": LIMITS.max_chars, "max_tokens": LIMITS.max_tokens},
            "bad_character": [[text, bad_character(text)] for text in BAD_TEXTS], "bundles": bundles}


def dumps(data: dict) -> str:
    """The file's text: one entry a line, non-ASCII escaped."""
    def block(rows) -> str:
        return "[\n" + ",\n".join(f"        {json.dumps(row)}" for row in rows) + "\n      ]"

    bundles = ",\n".join(
        f'    {json.dumps(pair)}: {{\n      "translations": {block(part["translations"])},\n'
        f'      "attentions": {block(part["attentions"])},\n      "fit": {json.dumps(part["fit"])}\n    }}'
        for pair, part in data["bundles"].items())
    return (f'{{\n  "limits": {json.dumps(data["limits"])},\n  "bad_character": {json.dumps(data["bad_character"])},\n'
            f'  "bundles": {{\n{bundles}\n  }}\n}}\n')


if __name__ == "__main__":
    GOLDEN.write_text(dumps(golden()), encoding="utf-8")
    print(f"wrote {GOLDEN.relative_to(ROOT)}")
