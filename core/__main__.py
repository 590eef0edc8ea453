"""Translate text with a model folder using the PyTorch reference.

    python -m core --model models/en-de "A man rides a bike."
    echo "A man rides a bike." | python -m core --model models/en-de --beam 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__.split("\n\n")[0])
    parser.add_argument("texts", nargs="*", help="sentences to translate (default: read lines from stdin)")
    parser.add_argument("--model", type=Path, default=Path("models/en-de"), help="model folder")
    parser.add_argument("--beam", type=int, default=5, help="beam size (1: greedy)")
    parser.add_argument("--n-best", type=int, default=1, help="print this many hypotheses per sentence, with scores")
    parser.add_argument("--length-penalty", type=float, default=1.0)
    args = parser.parse_args(argv)

    from .decoding import TorchTranslator

    texts = args.texts or [line.rstrip("\n") for line in sys.stdin]
    try:
        translator = TorchTranslator(args.model)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"cannot load model: {error}")
    results = translator.translate(texts, beam_size=args.beam, n_best=args.n_best, length_penalty=args.length_penalty)
    for result in results:
        if args.n_best == 1:
            print(result.text)
            continue
        for hypothesis in result.hypotheses:
            print(f"{hypothesis.score:.4f}\t{translator.tokenizer.decode(list(hypothesis.token_ids))}")
        print()


if __name__ == "__main__":
    main()
