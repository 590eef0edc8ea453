"""Optimum's ORTModelForSeq2SeqLM translates with a folder written by ``python -m export.hf --onnx``.

    OPTIMUM_PYTHON tests/optimum_translate.py MODEL_FOLDER BEAM < sources.json > token_ids.json

stdin: a JSON list of [sentence, max_new_tokens] (the project's per-source limit, ``core.search.max_target_length``);
stdout: the token ids of each, one search per sentence. Run by tests/test_hf.py in Optimum's own environment
(``python -m export.optimum_env``), never imported by the project.
"""

import json
import sys

from optimum.onnxruntime import ORTModelForSeq2SeqLM
from transformers import AutoTokenizer

folder, beam = sys.argv[1], int(sys.argv[2])
tokenizer = AutoTokenizer.from_pretrained(folder)
model = ORTModelForSeq2SeqLM.from_pretrained(folder, subfolder="onnx")
search = {"num_beams": beam, "early_stopping": True, "length_penalty": 1.0} if beam > 1 else {"num_beams": 1}
eos = model.config.eos_token_id
results = []
for sentence, limit in json.load(sys.stdin):
    inputs = tokenizer([sentence], return_tensors="pt")
    row = model.generate(**inputs, **search, max_new_tokens=limit, do_sample=False)[0].tolist()[1:]  # no start token
    results.append(row[: row.index(eos)] if eos in row else row)
print(json.dumps(results))
