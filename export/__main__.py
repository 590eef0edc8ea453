"""Export a trained model folder to a verified ONNX bundle.

    python -m export models/en-de [--source-lang en --target-lang de] [--out DIR] [--opset N] [--force]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .onnx_export import ExportError, export_bundle


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="folder with config.json, model.safetensors, tokenizer.json")
    parser.add_argument("--out", type=Path, help="bundle folder to write (default: MODEL_DIR/onnx)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (at least 17)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing bundle folder")
    parser.add_argument("--source-lang", help="source language code recorded in the manifest (e.g. en)")
    parser.add_argument("--target-lang", help="target language code recorded in the manifest (e.g. de)")
    args = parser.parse_args(argv)
    try:
        manifest = export_bundle(args.model_dir, args.out, opset=args.opset, force=args.force,
                                 source_lang=args.source_lang, target_lang=args.target_lang)
    except ExportError as error:
        sys.exit(f"export failed: {error}")
    out = args.out or args.model_dir / "onnx"
    parity = manifest["parity"]
    print(f"wrote {out}: greedy tokens equal on {parity['sentences']} sentences, "
          f"log-probabilities within {parity['max_log_prob_difference']:.1e} of their scale, "
          f"max |attention diff| {parity['max_attention_difference']:.2e}")
    int8 = parity["int8"]
    print(f"  int8 graphs: top-1 equal to float32 on {int8['top1_agreement']:.1%} of {int8['steps']} steps, "
          f"the same tokens alone and batched")
    for name, entry in manifest["files"].items():
        print(f"  {name:24s} {entry['bytes'] / 1e6:8.2f} MB")


if __name__ == "__main__":
    main()
