"""demo: the Gradio app that translates with the shipped ONNX bundles and shows every attention head, without torch.

``python -m demo`` opens it; :mod:`demo.handlers` holds what it does as plain functions, :mod:`demo.inside` the
look-inside views (the beam search, what if, two sentences; :mod:`demo.beamtree` draws the tree), :mod:`demo.heads`
single heads (open a cell of a heatmap, heads off), :mod:`demo.app`
the page, :mod:`demo.lesson` the article's worked example, :mod:`demo.space` writes a Hugging Face Space folder.
"""
