"""Look inside a translation (no Gradio): the beam search as a tree and the attention of any node of it, what-if
decoding from another candidate or a typed start, and two translations side by side.

Every function takes the loaded translators ({direction label: translator}) and :class:`demo.handlers.DemoTranslation`
results, and raises :class:`demo.handlers.DemoInputError` with a message for the page on bad input. Each costs at
most one search or one teacher-forced pass of the model, on inputs the demo's limits already bound.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, replace


from core.search import Hypothesis, attention_of
from serve import Translator

from . import beamtree, figures, handlers
from .handlers import DemoInputError, DemoTranslation

COMPARE_EXAMPLE = ("The man sees the woman.", "The woman sees the man.")


def beam_tree_view(directions: Mapping[str, Translator], result: DemoTranslation) -> str:
    """The recorded beam search of a translation as the page's tree (:func:`demo.beamtree.beam_tree_html`)."""
    translator = directions[result.direction]
    return beamtree.beam_tree_html(result.beams, translator.tokenizer.id_to_token,
                                   translator.tokenizer.id_to_token(translator.config.bos_id))


def whole_number(value, what: str) -> int:
    """value as an int (a whole float, or digits typed into a menu, are one too); DemoInputError naming ``what``
    otherwise."""
    if isinstance(value, float) and value.is_integer() or isinstance(value, str) and value.strip().isdecimal():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DemoInputError(f"The {what} must be a whole number, got {value!r}.")
    return value


def beam_node(result: DemoTranslation, step, index) -> tuple[int, int]:
    """(step, index) checked against the translation's beam record (both 1-based on the page, 0-based here)."""
    step, index = whole_number(step, "step"), whole_number(index, "candidate")
    steps = result.beams.steps
    if not 1 <= step <= len(steps):
        raise DemoInputError(f"Step {step} does not exist; this search has {len(steps)}.")
    if not 1 <= index <= len(steps[step - 1]):
        raise DemoInputError(f"Step {step} has {len(steps[step - 1])} candidates, not {index}.")
    return step - 1, index - 1


def partial_hypothesis(directions: Mapping[str, Translator], result: DemoTranslation, step,
                       index) -> DemoTranslation:
    """The partial hypothesis that beam node (step, index) ends (1-based), with its attention: one teacher-forced
    pass over the node's path, exactly the decoding steps that produced it (a finished node's EOS included)."""
    step, index = beam_node(result, step, index)
    translator = directions[result.direction]
    config, tokenizer = translator.config, translator.tokenizer
    path = result.beams.path(step, index)
    ids = [node.token_id for node in path]
    finished = ids[-1] == config.eos_id
    hypothesis = Hypothesis(tuple(ids[:-1] if finished else ids), path[-1].log_prob, path[-1].log_prob, finished,
                            tuple(node.token_log_prob for node in path))
    source = tokenizer.encode(result.source) + [config.eos_id]
    (attention,) = attention_of(translator.backend, tokenizer, [source], [hypothesis])
    return replace(result, text=tokenizer.decode(hypothesis.token_ids), score=path[-1].log_prob, attention=attention,
                   hypothesis=hypothesis, node=(step + 1, index + 1))


def node_summary(result: DemoTranslation, step, index) -> str:
    """One Markdown line naming what the attention views show: a node's partial hypothesis and its score."""
    shown = " ".join(handlers.code_span(token) for token in result.attention.target_tokens)
    return (f"Showing the attention of step {step}, candidate {index}: {shown} (log-probability "
            f"{result.score:.2f}). Choose another node, or show the whole translation again.")


def chosen_indices(result: DemoTranslation) -> list[int]:
    """The index of the translation's node at each step of its beam record."""
    by_step = sorted(beamtree.chosen_nodes(result.beams))
    return [index for _, index in by_step]


def position_choices(result: DemoTranslation) -> list[tuple[str, int]]:
    """(label, 1-based position) of every output token of the translation, for the what-if's position menu."""
    return [(f"{position} · {token}", position) for position, token in enumerate(result.attention.target_tokens, 1)]


def candidate_choices(directions: Mapping[str, Translator], result: DemoTranslation,
                      position) -> list[tuple[str, str]]:
    """(label, token) of the candidates the search ranked at an output position (1-based) that continue the
    translation's own first position - 1 tokens, best first; EOS is left out (a translation cannot be forced to
    end)."""
    position = whole_number(position, "position")
    steps = result.beams.steps
    if not 1 <= position <= len(steps):
        raise DemoInputError(f"Position {position} does not exist; the translation has {len(steps)} tokens.")
    translator = directions[result.direction]
    parent = -1
    if position > 1:  # the kept index of the translation's node one step before
        previous = steps[position - 2]
        node = chosen_indices(result)[position - 2]
        parent = sum(1 for candidate in previous[:node] if candidate.status == "kept")
    return [(f"{translator.tokenizer.id_to_token(node.token_id)} (log-prob {node.token_log_prob:.2f})",
             translator.tokenizer.id_to_token(node.token_id))
            for node in steps[position - 1] if node.parent == parent and node.token_id != translator.config.eos_id]


def first_alternative(result: DemoTranslation, position, choices: list[tuple[str, str]]) -> str | None:
    """The best candidate at a position that is not the translation's own token (its own when there is no other)."""
    own = result.attention.target_tokens[int(position) - 1]
    return next((token for _, token in choices if token != own), choices[0][1] if choices else None)


@dataclass(frozen=True)
class WhatIf:
    """A translation decoded on from another start, and how it differs from the original."""

    result: DemoTranslation
    start: str  # the start it was made to take, as Markdown
    table: str  # Markdown: each position's token and log-probability before and after
    difference: object  # plotly Figure: cross-attention after minus before, at one layer and head


def what_if(directions: Mapping[str, Translator], result: DemoTranslation, position, candidate: str | None,
            typed: str | None, layer, head: str) -> WhatIf:
    """Decode again with the same beam size from another start: the translation's first position - 1 tokens and
    ``candidate`` at ``position`` (1-based), or the ``typed`` start when it is not blank. Returns the new
    translation, each token's log-probability before and after, and the difference of the cross-attention (layer,
    head) between the new translation and the original."""
    if typed and typed.strip():
        if len(typed) > handlers.LIMITS.max_chars:
            raise DemoInputError(f"The typed start has {len(typed):,} characters; at most "
                                 f"{handlers.LIMITS.max_chars:,} are read.")
        prefix: str | list[str] = typed
        start = handlers.code_span(typed.strip())
    else:
        if not candidate:
            raise DemoInputError("Choose a candidate token, or type the start of the translation.")
        choices = candidate_choices(directions, result, position)
        if candidate not in [token for _, token in choices]:
            raise DemoInputError(f"{candidate!r} is not a candidate at position {position}; choose one of: "
                                 f"{', '.join(token for _, token in choices)}.")
        prefix = result.attention.target_tokens[: int(position) - 1] + [candidate]
        start = " ".join(handlers.code_span(token) for token in prefix)
    new = handlers.translate_text(directions, result.direction, result.source, result.beam_size,
                                  target_prefix=prefix)
    return WhatIf(new, start, log_prob_table(result, new), cross_difference(result, new, layer, head))


def log_prob_table(before: DemoTranslation, after: DemoTranslation) -> str:
    """Each output position's token and log-probability in two translations, and their sums, as a Markdown table
    (tokens as code spans; a position only one of them has is left blank in the other)."""
    def cells(result: DemoTranslation, position: int) -> tuple[str, str]:
        if position >= len(result.hypothesis.token_log_probs):
            return "", ""
        token = result.attention.target_tokens[position]
        return handlers.code_span(token).replace("|", "\\|"), f"{result.hypothesis.token_log_probs[position]:.2f}"

    rows = ["| # | before | log p | after | log p |", "| ---: | :--- | ---: | :--- | ---: |"]
    for position in range(max(len(before.hypothesis.token_log_probs), len(after.hypothesis.token_log_probs))):
        (old, old_log_prob), (new, new_log_prob) = cells(before, position), cells(after, position)
        rows.append(f"| {position + 1} | {old} | {old_log_prob} | {'**' + new + '**' if new != old else new} | "
                    f"{new_log_prob} |")
    rows.append(f"| | **total** | **{sum(before.hypothesis.token_log_probs):.2f}** | | **{sum(after.hypothesis.token_log_probs):.2f}** |")
    return "\n".join(rows)


def cross_difference(before: DemoTranslation, after: DemoTranslation, layer, head: str) -> object:
    """The cross-attention (layer, head) of ``after`` minus that of ``before``, over the output positions both
    have (labelled "position·before→after" where their tokens differ; positions only one has are left out)."""
    old = handlers.view_weights(before, "cross", layer, head)
    new = handlers.view_weights(after, "cross", layer, head)
    shared = min(len(old.queries), len(new.queries))
    labels = [f"{position}·{a}" if a == b else f"{position}·{a}→{b}"
              for position, (a, b) in enumerate(zip(old.queries, new.queries), 1)]
    labels = [html.escape(label) for label in labels]  # plotly reads labels as HTML
    return figures.difference_heatmap(new.weights[:shared] - old.weights[:shared], labels, old.keys,
                                      title=f"Cross-attention, after minus before<br>{new.name}",
                                      query_title="output position (query)", key_title=handlers.KEY_TITLES["cross"])


def compare(directions: Mapping[str, Translator], direction: str, first: str, second: str,
            beam_size: int) -> tuple[DemoTranslation, DemoTranslation]:
    """Translate two texts in one direction (each as :func:`demo.handlers.translate_text` does)."""
    return tuple(handlers.translate_text(directions, direction, text, beam_size) for text in (first, second))


def compare_views(first: DemoTranslation, second: DemoTranslation, kind: str, layer, head: str,
                  rollout: bool = False) -> tuple[object, object]:
    """The same view (kind, layer, head, rollout) of two translations as heatmaps on one colour scale."""
    views = [handlers.view_weights(result, kind, layer, head, rollout) for result in (first, second)]
    top = max(figures.scale_top(view.weights) for view in views)
    return tuple(handlers.view_heatmap(view, kind, top=top) for view in views)
