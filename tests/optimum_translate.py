"""Optimum's ORTModelForSeq2SeqLM translates with a folder written by ``python -m export.hf --onnx``.

    OPTIMUM_PYTHON tests/optimum_translate.py MODEL_FOLDER BEAM < sentences.json > token_ids.json

Run by tests/test_hf.py in Optimum's own environment (``python -m export.optimum_env``), never imported by the
project: one search per sentence, stopped at 1.5 n + 10 new tokens for n source tokens, as the project's search.
"""

import json
import sys

from optimum.onnxruntime import ORTModelForSeq2SeqLM
from transformers import AutoTokenizer

folder, beam = sys.argv[1], int(sys.argv[2])
tokenizer = AutoTokenizer.from_pretrained(folder)
model = ORTModelForSeq2SeqLM.from_pretrained(folder, subfolder="onnx", use_cache=True, use_merged=True)
results = []
for sentence in json.load(sys.stdin):
    inputs = tokenizer([sentence], return_tensors="pt")
    limit = int(1.5 * inputs["input_ids"].shape[1] + 10)
    search = {"num_beams": beam, "early_stopping": True, "length_penalty": 1.0} if beam > 1 else {"num_beams": 1}
    row = model.generate(**inputs, **search, max_new_tokens=limit, do_sample=False)[0].tolist()[1:]
    results.append(row[: row.index(model.config.eos_token_id)] if model.config.eos_token_id in row else row)
print(json.dumps(results))
