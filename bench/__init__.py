"""bench: serve measured against PyTorch and CTranslate2 (``python -m bench``; needs the ``bench`` extra), and
what hostile requests cost a running server (``python -m bench.hostile``; needs only the ``serve`` extra).

Outside ``serve`` on purpose: the benchmark imports torch and ctranslate2, which the server never needs.
"""
