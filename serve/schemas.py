"""The HTTP API's request and response bodies (the Hugging Face translation task, plus the project's extras).

Typed at the edge: pydantic refuses wrong types, ``null`` and unknown fields before :mod:`serve.validation` checks
the limits. Nothing here runs a model.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr


class GenerateParameters(BaseModel):
    """The generation settings this server supports (the Hugging Face names)."""

    model_config = ConfigDict(extra="forbid")
    num_beams: StrictInt | None = Field(None, description="beam size, 1 (greedy) to the server's max_beams; default 5")
    max_new_tokens: StrictInt | None = Field(
        None, description="most output tokens, EOS included; default 1.5 x source tokens + 10")
    length_penalty: StrictFloat | StrictInt | None = Field(
        None, description="score = log P / length^length_penalty; default 1.0")


class TranslationParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    src_lang: StrictStr | None = Field(None, description="source language; optional when one model is loaded")
    tgt_lang: StrictStr | None = Field(None, description="target language; optional when one model is loaded")
    clean_up_tokenization_spaces: StrictBool | None = Field(
        None, description="accepted for compatibility; output is always clean")
    truncation: Literal["do_not_truncate", "longest_first", "only_first"] | None = Field(
        None, description="do_not_truncate (default): an over-long input is an error; otherwise it is cut to fit")
    generate_parameters: GenerateParameters | None = None
    return_scores: StrictBool = Field(False, description="add each translation's length-normalized log-probability")
    n_best: StrictInt | None = Field(None, description="add the n best hypotheses (1 to num_beams)")
    return_attention: StrictBool = Field(
        False, description="add every layer's and head's attention of the chosen translation (few inputs only)")
    target_prefix: list[StrictStr | list[StrictStr] | None] | None = Field(
        None, description="one entry per input: null, a text or a list of subword tokens the translation must start "
                          "with; the search continues from it")
    return_beams: StrictBool = Field(
        False, description="add every step of the beam search: each candidate ranked, its parent and fate")
    split_sentences: StrictBool = Field(
        False, description="translate each input sentence by sentence (split by sentencex in the model's source "
                           "language; the translations joined with a space); default false: each input is one search. "
                           "Not with return_attention, return_beams, n_best or target_prefix")
    heads_off: list[StrictStr] | None = Field(
        None, description="attention heads to switch off for this request, each 'kind.layer.head' (kind encoder, "
                          "decoder or cross; layer and head from 0), e.g. ['cross.3.1']")


class TranslationRequest(BaseModel):
    """The Hugging Face translation task body."""

    model_config = ConfigDict(extra="forbid")
    inputs: StrictStr | list[StrictStr]
    parameters: TranslationParameters | None = None


class ScoredText(BaseModel):
    """One entry of an n-best list: a hypothesis (:class:`core.search.Hypothesis`) as text with its score."""

    translation_text: str
    score: float


class EncodedArray(BaseModel):
    """An array as little-endian float16 bytes in base64: ``np.frombuffer(base64.b64decode(data), "<f2")
    .reshape(shape)`` (2 bytes a weight, ~2.7 with base64; float16 keeps weights to about 3 significant digits)."""

    shape: list[int]
    data: str


class AttentionOutput(BaseModel):
    source_tokens: list[str]
    target_tokens: list[str]
    encoding: Literal["base64-float16-le"] = "base64-float16-le"
    encoder: EncodedArray = Field(description="[layers, heads, S, S]")
    decoder: EncodedArray = Field(description="[layers, heads, T, T]; keys are <s> and target_tokens[:-1]")
    cross: EncodedArray = Field(description="[layers, heads, T, S]")


class BeamNodeOutput(BaseModel):
    """One candidate the search ranked at one step (:class:`core.search.BeamNode`)."""

    token: str
    token_id: int
    parent: int = Field(description="index among the previous step's kept nodes; -1 at step 0 (<s>)")
    log_prob: float = Field(description="the beam's cumulative log-probability with this token")
    token_log_prob: float
    status: Literal["kept", "finished", "stopped", "pruned"]


class BeamsOutput(BaseModel):
    """Every step of one sentence's beam search (:class:`core.search.BeamRecord`)."""

    steps: list[list[BeamNodeOutput]] = Field(description="the candidates ranked at each step, best first")
    hypotheses: list[tuple[int, int]] = Field(
        description="[step, index] of the node that ended each returned hypothesis, best first")


class ConfidenceOutput(BaseModel):
    """Whether the source looks like the model's training data (:class:`core.confidence.Confidence`)."""

    score: float = Field(description="calibrated probability in [0, 1] that the source is in-domain")
    label: Literal["in_domain", "out_of_domain"] = Field(
        description="out_of_domain: the translation is probably wrong; treat with care")


class TranslationOutput(BaseModel):
    translation_text: str
    unknown_characters: int = Field(description="source characters the model cannot read (they became <unk>)")
    confidence: ConfidenceOutput | None = Field(
        None, description="present when the model is calibrated (confidence.json) and the input is not empty")
    truncated: bool | None = Field(None, description="present when truncation was asked for")
    score: float | None = None
    n_best: list[ScoredText] | None = None
    attention: AttentionOutput | None = None
    beams: BeamsOutput | None = None


class ErrorBody(BaseModel):
    """Every refused request's body."""

    error: str
    error_type: str
    field: str | None = None
