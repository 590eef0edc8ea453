"""The Hugging Face Hub model card (README.md with model-index metadata) of an exported folder, from metrics.json.

YAML front matter is written as JSON values, which YAML reads as they are (no YAML library needed). A model whose
metrics.json has ``ding_test.beam5`` scores was also trained on the Ding dictionary (:mod:`core.ding`): the card
then gives those scores, a general-domain warning, the dictionary's GPL and the weights' licence (``license``).
"""

from __future__ import annotations

import json

from core.config import TransformerConfig

PROJECT = "attention-mt"
METRICS_FILE = "metrics.json"
TEST_SET = "test_2016_flickr"
HUB_DATASET = "bentrevett/multi30k"  # Multi30K (en-de) as a Hub dataset, for the card's dataset link
LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "cs": "Czech"}
DATA_LICENCE = ("Multi30K (Elliott et al., 2016) extends the Flickr30K image descriptions (Young et al., 2014); its "
                "authors declare no licence of their own, and the Flickr30K descriptions are distributed for "
                "non-commercial research under the Flickr30K terms of use. Check those terms before any commercial "
                "use of these weights.")


GENERAL_SET = "ding_test"  # core.ding's test split: the Ding dictionary's everyday example sentences
GENERAL_NAME = "Ding dictionary example sentences (core.ding test split)"
DING_LICENCE = ("The Ding dictionary (Frank Richter, TU Chemnitz; Debian's trans-de-en) is licensed GPL-2.0-or-later; "
                "these weights were trained on its example sentences and phrases, and are released under the "
                "GPL-2.0-or-later too. The project's code stays MIT.")


def _scores(metrics: dict, beam: int, test_set: str = TEST_SET) -> dict | None:
    return metrics.get(f"{test_set}.beam{beam}")


def _domain_warning(metrics: dict) -> str:
    general = _scores(metrics, 5, GENERAL_SET)
    if not general:
        return ("**Domain warning.** It was trained only on Multi30K: short English and German descriptions of everyday "
                "photos (people, animals, streets, sports). On other text (news, dialogue, technical or long sentences) "
                "its translations are often wrong, and it has never seen most words outside that domain.\n")
    return ("**Domain warning.** It was trained on Multi30K (short descriptions of everyday photos) and on the "
            "example sentences and phrases of the Ding German–English dictionary. It translates captions well and "
            f"short everyday sentences passably (sacreBLEU {general['sacrebleu']}, chrF {general['chrf']} on held-out "
            "dictionary sentences, beam 5); it is a 2.3 M-parameter model: on news, dialogue, technical or long "
            "sentences expect mistakes.\n")


def _metadata(name: str, languages: dict, metrics: dict, architecture: str) -> str:
    pair = f"{languages['source']}-{languages['target']}"
    results = []
    for beam in (5, 1):
        scores = _scores(metrics, beam)
        if not scores:
            continue
        search = "beam 5" if beam == 5 else "greedy"
        results.append({
            "task": {"type": "translation", "name": f"Translation {pair}"},
            "dataset": {"type": HUB_DATASET, "name": f"Multi30K {TEST_SET}", "split": TEST_SET},
            "metrics": [
                {"type": "bleu", "value": scores["sacrebleu"], "name": f"sacreBLEU ({search})",
                 "args": scores.get("sacrebleu_signature")},
                {"type": "chrf", "value": scores["chrf"], "name": f"chrF ({search})"},
                {"type": "bleu", "value": scores["bleu_tok_lc"],
                 "name": f"tokenized lowercased BLEU, the published-paper metric ({search})"},
            ],
        })
    general = _scores(metrics, 5, GENERAL_SET)
    if general:
        results.append({
            "task": {"type": "translation", "name": f"Translation {pair}"},
            "dataset": {"type": "ding", "name": GENERAL_NAME, "split": "test"},
            "metrics": [{"type": "bleu", "value": general["sacrebleu"], "name": "sacreBLEU (beam 5)",
                         "args": general.get("sacrebleu_signature")},
                        {"type": "chrf", "value": general["chrf"], "name": "chrF (beam 5)"}],
        })
    fields = {
        "language": [languages["source"], languages["target"]],
        "license": "gpl-2.0" if general else "mit",
        "library_name": "transformers",
        "pipeline_tag": "translation",
        "tags": ["translation", architecture.removesuffix("ForConditionalGeneration").removesuffix("MTModel").lower(),
                 "onnx", "transformers.js", PROJECT],
        "datasets": [HUB_DATASET],
        "metrics": ["bleu", "chrf"],
        "model-index": [{"name": f"{PROJECT}-{name}", "results": results}],
    }
    lines = [f"{key}: {json.dumps(value, ensure_ascii=False)}" for key, value in fields.items()]
    return "---\n" + "\n".join(lines) + "\n---\n"


def model_card(name: str, architecture: str, config: TransformerConfig, languages: dict, metrics: dict) -> str:
    """README.md for the Hub: metadata with the test scores, usage, the domain warning, the recipe, the data licence."""
    source, target = (LANGUAGE_NAMES.get(code, code) for code in (languages["source"], languages["target"]))
    training = metrics.get("training", {})
    rows = [f"| {'beam 5' if beam == 5 else 'greedy'} | {s['bleu_tok_lc']} | {s['sacrebleu']} | {s['chrf']} |"
            for beam in (5, 1) if (s := _scores(metrics, beam))]
    general = _scores(metrics, 5, GENERAL_SET)
    commands = [command for stage in training.get("stages", []) for command in stage.get("commands", [])]
    recipe = [f"- Data: {training['data']}" if "data" in training else None,
              f"- Model: {training['preset']}" if "preset" in training else None,
              f"- Training minutes in all: {training['total_train_minutes']:.0f}"
              if "total_train_minutes" in training else None]
    parts = [
        _metadata(name, languages, metrics, architecture),
        f"# {PROJECT} {name}: {source}→{target} Transformer on Multi30K{' and the Ding dictionary' if general else ''}\n",
        f"A {config.n_encoder_layers}+{config.n_decoder_layers}-layer Transformer (d_model {config.d_model}, FFN "
        f"{config.d_ff}, {config.n_heads} heads, {'pre' if config.pre_norm else 'post'}-norm, joint BPE of "
        f"{config.vocab_size} tokens) from the {PROJECT} project, stored as a stock `{architecture}`: transformers, "
        "Optimum and Transformers.js load it with no custom code, and translate exactly as the project's own "
        "search does (greedy and beam 5).\n",
        _domain_warning(metrics),
        f"## Scores on Multi30K {TEST_SET} (1,000 sentences)\n",
        "| search | tokenized lowercased BLEU | sacreBLEU | chrF |\n| --- | --- | --- | --- |\n" + "\n".join(rows)
        + "\n" if rows else "No scores were recorded for this model.\n",
        f"On the {GENERAL_NAME}, {general['sentences']:,} sentences, beam 5: sacreBLEU {general['sacrebleu']}, chrF "
        f"{general['chrf']}.\n" if general else "",
        "## Use\n",
        "```python\nfrom transformers import AutoModelForSeq2SeqLM, AutoTokenizer\n\n"
        "tokenizer = AutoTokenizer.from_pretrained(\"THIS_FOLDER_OR_REPO\")\n"
        "model = AutoModelForSeq2SeqLM.from_pretrained(\"THIS_FOLDER_OR_REPO\")\n"
        "inputs = tokenizer([\"...\"], return_tensors=\"pt\", padding=True)\n"
        "print(tokenizer.batch_decode(model.generate(**inputs, num_beams=5), skip_special_tokens=True))\n```\n",
        "The project's search stops each output at 1.5 n + 10 tokens for n source tokens (its `</s>` included); "
        "generate() has one limit per call (`max_length` in generation_config.json is the decoder's positions), so "
        "pass `max_new_tokens` for the same cut. In Transformers.js use greedy search (it has no beam search) and "
        "one sentence per call; `onnx/` holds float32 files only, which config.json names as the default dtype.\n",
        "## Training\n",
        "\n".join(line for line in recipe if line) + "\n" if any(recipe) else "",
        "The recorded commands, in order:\n\n```bash\n" + "\n".join(commands) + "\n```\n" if commands else "",
        f"Every stage, its data, minutes and the validation scores of every candidate are in `{METRICS_FILE}` beside "
        "this card; the test set was only scored.\n" if training else "",
        "## Data licence\n",
        DATA_LICENCE + (" " + DING_LICENCE if general else " The weights themselves are MIT-licensed, like the project.")
        + "\n",
    ]
    return "\n".join(part for part in parts if part)
