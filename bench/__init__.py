"""bench: serve measured against PyTorch and CTranslate2 (``python -m bench``; needs the ``bench`` extra).

Outside ``serve`` on purpose: it imports torch and ctranslate2, which the server never needs.
"""
