"""Train a translation model on a parallel corpus.

    python -m core.train --src-train train.en --tgt-train train.de \
        --src-valid val.en --tgt-valid val.de --out models/en-de --preset tiny

Runs on CPU or CUDA, and data-parallel across processes with ``torchrun --nproc_per_node N -m core.train ...``
(gloo on CPU, nccl on GPU). Writes into --out: tokenizer.json, config.json, model.safetensors (the selected
final weights), train_log.jsonl (one line per epoch), training_curves.png and checkpoints/ for --resume.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import shutil
import sys
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import STATE_FILE, average_weights, load_checkpoint, save_checkpoint
from .config import PRESETS, TransformerConfig
from .data import drop_empty, drop_long, read_corpus, token_batches
from .decoding import TorchBackend
from .search import pad_batch
from .model import Transformer
from .tokenizer import TOKENIZER_FILE, Tokenizer
from .translator import BaseTranslator

LOG_FILE = "train_log.jsonl"
CURVES_FILE = "training_curves.png"
PER_INVOCATION_OPTIONS = ("resume", "max_minutes", "threads", "device")
REGULARIZATION_OPTIONS = ("dropout", "attention_dropout", "activation_dropout")
MODEL_OPTIONS = ("d_model", "n_heads", "d_ff", "n_encoder_layers", "n_decoder_layers", *REGULARIZATION_OPTIONS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m core.train", description=__doc__.split("\n\n")[0])
    data = parser.add_argument_group("data")
    data.add_argument("--src-train", required=True, help="source sentences, or a TSV (source<TAB>target) alone")
    data.add_argument("--tgt-train", help="target sentences aligned with --src-train (omit for a TSV)")
    data.add_argument("--src-valid", required=True, help="validation source sentences, or a TSV")
    data.add_argument("--tgt-valid", help="validation target sentences (omit for a TSV)")
    data.add_argument("--out", required=True, type=Path, help="model folder to write")
    data.add_argument("--vocab-size", type=int, default=8000, help="joint BPE vocabulary size")
    data.add_argument("--max-length", type=int, default=128, help="drop training pairs longer than this (tokens)")

    model = parser.add_argument_group("model (a preset, then any override)")
    model.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    model.add_argument("--d-model", type=int)
    model.add_argument("--n-heads", type=int)
    model.add_argument("--d-ff", type=int)
    model.add_argument("--n-encoder-layers", type=int)
    model.add_argument("--n-decoder-layers", type=int)
    model.add_argument("--dropout", type=float, help="with --init-from: replaces the loaded model's value")
    model.add_argument("--attention-dropout", type=float, help="with --init-from: replaces the loaded model's value")
    model.add_argument("--activation-dropout", type=float,
                       help="dropout on the feed-forward ReLU output; with --init-from: replaces the loaded model's value")
    model.add_argument("--pre-norm", action="store_true", help="LayerNorm before each sublayer instead of after")

    optim = parser.add_argument_group("optimization")
    optim.add_argument("--max-tokens", type=int, default=4096, help="padded tokens per batch and process")
    optim.add_argument("--lr", type=float, default=1e-3, help="peak learning rate, reached after warmup")
    optim.add_argument("--warmup-steps", type=int, default=2000)
    optim.add_argument("--lr-schedule", choices=("inverse-sqrt", "cosine"), default="inverse-sqrt",
                       help="after warmup: peak * sqrt(warmup / step), or a cosine decay reaching 0 at --max-epochs")
    optim.add_argument("--label-smoothing", type=float, default=0.1)
    optim.add_argument("--rdrop", type=float, default=0.0, metavar="ALPHA",
                       help="R-Drop: run each batch twice (two dropout masks) and add ALPHA times their symmetric "
                            "KL divergence to the loss; a strong regularizer for small corpora (0 disables)")
    optim.add_argument("--clip-norm", type=float, default=1.0, help="gradient norm clipping (0 disables)")
    optim.add_argument("--weight-decay", type=float, default=0.0)
    optim.add_argument("--max-epochs", type=int, default=100)
    optim.add_argument("--patience", type=int, default=10,
                       help="stop after this many BLEU validations without a better BLEU")
    optim.add_argument("--bleu-every", type=int, default=1,
                       help="greedy validation BLEU every N epochs and at the last (the loss is validated every epoch)")
    optim.add_argument("--max-minutes", type=float, default=0,
                       help="stop this invocation after this many minutes, resumable with --resume (0: no limit)")
    optim.add_argument("--average-last", type=int, default=5, help="average this many checkpoints at the end")
    optim.add_argument("--seed", type=int, default=1)

    run = parser.add_argument_group("run")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                     help="bf16 autocast; auto uses it where the device supports it")
    run.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    run.add_argument("--checkpoint-every", type=int, default=500, help="also checkpoint every N steps")
    run.add_argument("--resume", action="store_true", help="continue from --out/checkpoints/last")
    run.add_argument("--init-from", type=Path,
                     help="start from this model folder's weights, config and tokenizer (fresh optimizer)")
    run.add_argument("--valid-batch-size", type=int, default=200)
    args = parser.parse_args(argv)
    saved_state = args.out / "checkpoints" / "last" / STATE_FILE
    if args.resume and saved_state.is_file():
        # Options not given again keep the values of the run being resumed (learning rate, batch size, ...).
        saved = json.loads(saved_state.read_text(encoding="utf-8"))["trainer"].get("args", {})
        parser.set_defaults(**{k: v for k, v in saved.items() if k not in PER_INVOCATION_OPTIONS})
        args = parser.parse_args(argv)
    if args.bleu_every < 1:
        parser.error(f"--bleu-every must be at least 1, got {args.bleu_every}")
    if (args.tgt_train is None) != (args.tgt_valid is None):
        parser.error("give --tgt-train and --tgt-valid together (plain files), or neither (TSV files)")
    return args


def model_config(args: argparse.Namespace, vocab_size: int) -> TransformerConfig:
    values = dict(PRESETS[args.preset])
    for name in MODEL_OPTIONS:
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    return TransformerConfig(vocab_size=vocab_size, pre_norm=args.pre_norm, **values)


def init_config(args: argparse.Namespace) -> TransformerConfig:
    """The --init-from model's config with any given dropout options; other options must agree."""
    config = TransformerConfig.load(args.init_from)
    for name in set(MODEL_OPTIONS) - set(REGULARIZATION_OPTIONS):
        if getattr(args, name) not in (None, getattr(config, name)):
            raise SystemExit(f"--{name.replace('_', '-')} {getattr(args, name)} differs from {args.init_from}'s "
                             f"{getattr(config, name)}: --init-from keeps the architecture of the model it loads")
    overrides = {name: getattr(args, name) for name in REGULARIZATION_OPTIONS if getattr(args, name) is not None}
    return dataclasses.replace(config, **overrides)


def inverse_sqrt_lr(step: int, peak: float, warmup: int) -> float:
    """Linear warmup to peak over warmup steps, then peak * sqrt(warmup / step) (the paper's schedule, rescaled)."""
    step = max(step, 1)
    return peak * min(step / warmup, math.sqrt(warmup / step))


def cosine_lr(step: int, peak: float, warmup: int, total_steps: int) -> float:
    """Linear warmup to peak, then half a cosine down to 0 at total_steps (and 0 after it)."""
    step = max(step, 1)
    if step < warmup:
        return peak * step / warmup
    progress = min((step - warmup) / max(total_steps - warmup, 1), 1.0)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def token_loss(logits: torch.Tensor, target_ids: torch.Tensor, pad_id: int, **options) -> torch.Tensor:
    """Cross-entropy of logits [B, T, V] against target_ids [B, T], padding ignored; options go to F.cross_entropy.

    Computed on [B * T, V] rows: much faster on CPU than the [B, V, T] layout."""
    return F.cross_entropy(logits.float().flatten(0, 1), target_ids.flatten(), ignore_index=pad_id, **options)


def rdrop_loss(logits: torch.Tensor, target_ids: torch.Tensor, pad_id: int, alpha: float,
               label_smoothing: float) -> torch.Tensor:
    """R-Drop (Liang et al., NeurIPS 2021): logits [2B, T, V] are two dropout passes over one batch of targets [B, T].

    Label-smoothed cross-entropy of both passes plus alpha times their symmetric KL divergence, per real target
    token, scaled as in the paper's fairseq criterion: ce + alpha * (KL(p||q) + KL(q||p)) / 4. One log-softmax
    serves both terms (the vocabulary-wide tensors dominate the cost on CPU)."""
    log_probs = logits.float().log_softmax(-1)  # [2B, T, V]
    targets = target_ids.repeat(2, 1)  # [2B, T]
    nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [2B, T]
    smoothed = (1 - label_smoothing) * nll - label_smoothing * log_probs.mean(-1)
    cross_entropy = smoothed[targets != pad_id].mean()
    log_p, log_q = log_probs.chunk(2)  # [B, T, V] each
    symmetric_kl = ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(-1)  # KL(p||q) + KL(q||p), [B, T]
    return cross_entropy + alpha * symmetric_kl[target_ids != pad_id].mean() / 4


class Run:
    """Process-group facts: rank, world size, device; all printing and writing happens on rank 0."""

    def __init__(self, device_name: str) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device_name == "auto":
            device_name = "cuda" if torch.cuda.is_available() else "cpu"
        if device_name == "cuda" and self.world_size > 1:
            device_name = f"cuda:{local_rank}"
        self.device = torch.device(device_name)
        if self.device.type == "cuda" and self.device.index is not None:
            torch.cuda.set_device(self.device)
        if self.world_size > 1:
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def print(self, *values) -> None:
        if self.main:
            print(*values, flush=True)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def all_agree(self, flag: bool) -> bool:
        """Rank 0's decision, shared with every rank."""
        if self.world_size == 1:
            return flag
        value = torch.tensor([int(flag)], device=self.device)
        dist.broadcast(value, src=0)
        return bool(value.item())

    def close(self) -> None:
        if self.world_size > 1:
            dist.destroy_process_group()


def encode_pairs(tokenizer: Tokenizer, pairs, config: TransformerConfig):
    """Source ids end with EOS; targets become (BOS + y, y + EOS)."""
    sources = tokenizer.encode_batch([source for source, _ in pairs])
    targets = tokenizer.encode_batch([target for _, target in pairs])
    return [(s + [config.eos_id], [config.bos_id] + t + [config.eos_id]) for s, t in zip(sources, targets)]


def collate(examples, pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(source ids, BOS+target+EOS ids) pairs -> source [B, S], decoder input [B, T], decoder output [B, T],
    and the number of real target tokens (counted on the host, so training never waits for the device)."""
    source = pad_batch([source for source, _ in examples], pad_id)
    target = pad_batch([target for _, target in examples], pad_id)  # [B, T + 1]
    target_tokens = sum(len(target_ids) - 1 for _, target_ids in examples)
    source, target = torch.from_numpy(source).to(device), torch.from_numpy(target).to(device)
    return source, target[:, :-1], target[:, 1:], target_tokens


def validation_loss(model: Transformer, examples, max_tokens: int, device: torch.device) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for batch in token_batches([(len(s), len(t)) for s, t in examples], max_tokens):
            source, target_in, target_out, tokens = collate([examples[i] for i in batch], model.config.pad_id, device)
            logits = model(source, target_in)
            total += token_loss(logits, target_out, model.config.pad_id, reduction="sum").item()
            count += tokens
    model.train()
    return total / max(count, 1)


def validation_bleu(model: Transformer, tokenizer: Tokenizer, pairs, batch_size: int) -> float:
    """Corpus BLEU (sacreBLEU, detokenized) of greedy translations of the validation sources."""
    import sacrebleu

    model.eval()
    translations = BaseTranslator(TorchBackend(model), tokenizer).translate([s for s, _ in pairs], beam_size=1, batch_size=batch_size)
    model.train()
    return sacrebleu.corpus_bleu([t.text for t in translations], [[r for _, r in pairs]]).score


def plot_curves(log_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    epochs = [row["epoch"] for row in rows]
    figure, (loss_axis, bleu_axis) = plt.subplots(1, 2, figsize=(11, 4))
    loss_axis.plot(epochs, [row["train_loss"] for row in rows], label="train (label-smoothed)")
    loss_axis.plot(epochs, [row["valid_loss"] for row in rows], label="validation (cross-entropy)")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("loss per target token")
    loss_axis.legend()
    loss_axis.grid(alpha=0.3)
    scored = [row for row in rows if row["valid_bleu"] is not None]
    bleu_axis.plot([row["epoch"] for row in scored], [row["valid_bleu"] for row in scored], color="tab:green", marker=".")
    bleu_axis.set_xlabel("epoch")
    bleu_axis.set_ylabel("validation BLEU (greedy, sacreBLEU)")
    bleu_axis.grid(alpha=0.3)
    figure.suptitle(f"training curves: {log_path.parent.name}")
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)


def best_by_bleu(epoch_dirs: dict[int, Path], history: list[dict]) -> list[int]:
    """The saved epochs that have a validation BLEU, best first."""
    bleu = {row["epoch"]: row["valid_bleu"] for row in history if row["valid_bleu"] is not None}
    return sorted((epoch for epoch in epoch_dirs if epoch in bleu), key=lambda epoch: -bleu[epoch])


def select_final_weights(
    model: Transformer, tokenizer: Tokenizer, valid_pairs, epoch_dirs: dict[int, Path], history: list[dict], args
) -> dict:
    """Pick the final weights by validation BLEU among the best and the last epoch and averages of the last/best N."""
    available = sorted(epoch_dirs)
    by_bleu = best_by_bleu(epoch_dirs, history)
    singles = sorted({by_bleu[0], available[-1]} if by_bleu else {available[-1]})  # the best-scored and the last epoch
    candidates = {f"epoch {epoch}": [epoch] for epoch in singles}
    n = min(args.average_last, len(available))
    if n > 1:
        candidates[f"average of last {n} epochs"] = available[-n:]
    best = by_bleu[: args.average_last]
    if len(best) > 1:
        candidates[f"average of best {len(best)} epochs"] = sorted(best)
    scores = {}
    for name, epochs in candidates.items():
        model.load_state_dict(average_weights([epoch_dirs[e] for e in epochs]))
        scores[name] = validation_bleu(model, tokenizer, valid_pairs, args.valid_batch_size)
        print(f"selection: {name} {epochs}: validation BLEU {scores[name]:.2f}", flush=True)
    chosen = max(scores, key=scores.get)
    model.load_state_dict(average_weights([epoch_dirs[e] for e in candidates[chosen]]))
    return {"chosen": chosen, "epochs": candidates[chosen], "valid_bleu_greedy": scores}


def load_data(args: argparse.Namespace, run: Run, init_from_config: TransformerConfig | None):
    """The corpora, the tokenizer (trained, copied from --init-from, or the run's own) and the model config."""
    out: Path = args.out
    train_pairs, report = drop_empty(read_corpus(args.src_train, args.tgt_train))
    run.print(f"train: {len(train_pairs)} pairs; {report}")
    valid_pairs, report = drop_empty(read_corpus(args.src_valid, args.tgt_valid))
    run.print(f"valid: {len(valid_pairs)} pairs; {report}")
    if run.main:
        out.mkdir(parents=True, exist_ok=True)
        if args.init_from and not (out / TOKENIZER_FILE).exists():
            shutil.copy(args.init_from / TOKENIZER_FILE, out / TOKENIZER_FILE)
        if not (out / TOKENIZER_FILE).exists():
            started = time.time()
            Tokenizer.train([text for pair in train_pairs for text in pair], vocab_size=args.vocab_size).save(out)
            run.print(f"trained a {args.vocab_size}-token joint BPE in {time.time() - started:.1f}s")
    run.barrier()
    tokenizer = Tokenizer.load(out)
    if args.resume:
        config = TransformerConfig.load(out / "checkpoints" / "last")
    elif args.init_from:
        config = init_from_config
    else:
        config = model_config(args, tokenizer.vocab_size)
    tokenizer.check_compatible(config)
    return tokenizer, config, train_pairs, valid_pairs


class Training:
    """One training run's objects and state; :func:`main` calls its steps in order."""

    def __init__(self, args: argparse.Namespace, argv: list[str] | None) -> None:
        self.args = args
        self.deadline = time.time() + args.max_minutes * 60 if args.max_minutes else math.inf
        self.run = run = Run(args.device)
        if args.threads:
            torch.set_num_threads(args.threads)
        torch.manual_seed(args.seed)
        self.out: Path = args.out
        self.checkpoints = self.out / "checkpoints"
        self.last_checkpoint = self.checkpoints / "last"
        if args.resume and not self.last_checkpoint.is_dir():
            sys.exit(f"--resume: no checkpoint at {self.last_checkpoint}")
        if not args.resume and ((self.out / LOG_FILE).exists() or self.last_checkpoint.exists()):
            sys.exit(f"{self.out} already holds a training run; pass --resume to continue it or choose another --out")
        init_from_config = init_config(args) if args.init_from and not args.resume else None  # fails before any work
        self.use_bf16 = args.precision == "bf16" or (
            args.precision == "auto" and (run.device.type == "cpu" or torch.cuda.is_bf16_supported()))
        self.autocast = (torch.autocast(device_type=run.device.type, dtype=torch.bfloat16) if self.use_bf16
                         else nullcontext())

        self.tokenizer, self.config, train_pairs, self.valid_pairs = load_data(args, run, init_from_config)
        train_examples = encode_pairs(self.tokenizer, train_pairs, self.config)
        kept, report = drop_long(train_examples, args.max_length)
        self.train_examples = [train_examples[i] for i in kept]
        run.print(f"train: {report}")
        self.valid_examples = encode_pairs(self.tokenizer, self.valid_pairs, self.config)
        self.lengths = [(len(s), len(t)) for s, t in self.train_examples]

        self.model = Transformer(self.config).to(run.device)
        if args.init_from and not args.resume:
            self.model.load_state_dict(Transformer.from_pretrained(args.init_from).state_dict())
            run.print(f"initialized from {args.init_from}")
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-9, weight_decay=args.weight_decay
        )
        self.state = {"epoch": 0, "batch": 0, "step": 0, "train_seconds": 0.0, "best_bleu": -1.0, "bad_epochs": 0,
                      "commands": [], "args": {}}
        self.history: list[dict] = []
        if args.resume:
            self.restore()
        self.state["commands"].append("python -m core.train " + shlex.join(sys.argv[1:] if argv is None else argv))
        self.state["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        self.trainable = torch.nn.parallel.DistributedDataParallel(self.model) if run.world_size > 1 else self.model
        run.print(f"model: {self.model.num_parameters():,} parameters, {self.config}; device {run.device}, "
                  f"bf16 {self.use_bf16}, {run.world_size} process(es)")
        epoch_dirs = {int(p.name.split("-")[1]): p for p in self.checkpoints.glob("epoch-*") if p.is_dir()}
        self.epoch_dirs = {epoch: path for epoch, path in epoch_dirs.items() if epoch <= self.state["epoch"]}

    def restore(self) -> None:
        """--resume: the checkpoint's weights, optimizer and state; log rows newer than the checkpoint dropped."""
        self.state = load_checkpoint(self.last_checkpoint, self.model, self.optimizer)
        log_lines = (self.out / LOG_FILE).read_text().splitlines() if (self.out / LOG_FILE).exists() else []
        history = [json.loads(line) for line in log_lines if line.strip()]
        self.history = [row for row in history if row["epoch"] <= self.state["epoch"]]
        if self.run.main:
            (self.out / LOG_FILE).write_text("".join(json.dumps(row) + "\n" for row in self.history), encoding="utf-8")
        self.state.setdefault("commands", [])
        self.run.print(f"resumed from {self.last_checkpoint}: epoch {self.state['epoch'] + 1}, "
                       f"batch {self.state['batch']}, step {self.state['step']}")

    def write_checkpoint(self, directory: Path) -> None:
        save_checkpoint(directory, self.model, self.optimizer, dict(self.state))

    def train_epoch(self, epoch: int) -> tuple[bool, float, int, float]:
        """Train until the epoch ends or the deadline passes: (finished, mean loss, target tokens, seconds)."""
        args, run, state, config = self.args, self.run, self.state, self.config
        batches = token_batches(self.lengths, args.max_tokens, seed=args.seed + epoch)
        batches = batches[: len(batches) // run.world_size * run.world_size][run.rank :: run.world_size]
        total_steps = state.setdefault("total_steps", args.max_epochs * len(batches))  # fixed at the first epoch
        learning_rate = partial(cosine_lr, total_steps=total_steps) if args.lr_schedule == "cosine" else inverse_sqrt_lr
        self.model.train()
        epoch_started = segment_started = time.time()  # segment: training time not yet added to the state
        loss_sum, token_count = torch.zeros((), device=run.device), 0
        progress = tqdm(range(state["batch"], len(batches)), desc=f"epoch {epoch}", disable=not run.main or None,
                        leave=False, unit="batch")
        for batch_index in progress:
            source, target_in, target_out, tokens = collate(
                [self.train_examples[i] for i in batches[batch_index]], config.pad_id, run.device
            )
            state["step"] += 1
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate(state["step"], args.lr, args.warmup_steps)
            passes = 2 if args.rdrop > 0 else 1  # R-Drop: the batch twice, under two dropout masks
            with self.autocast:
                logits = self.trainable(source.repeat(passes, 1), target_in.repeat(passes, 1))  # [passes * B, T, V]
            if args.rdrop > 0:
                loss = rdrop_loss(logits, target_out, config.pad_id, args.rdrop, args.label_smoothing)
            else:
                loss = token_loss(logits, target_out, config.pad_id, label_smoothing=args.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if args.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), args.clip_norm)
            self.optimizer.step()
            loss_sum += loss.detach() * tokens
            token_count += tokens
            state["batch"] = batch_index + 1
            if state["step"] % args.checkpoint_every == 0 and run.main:
                state["train_seconds"] += time.time() - segment_started
                segment_started = time.time()
                self.write_checkpoint(self.last_checkpoint)
            if self.deadline < math.inf and run.all_agree(time.time() > self.deadline):  # all stop at one batch
                break
        epoch_seconds = time.time() - epoch_started
        state["train_seconds"] += time.time() - segment_started
        return state["batch"] >= len(batches), float(loss_sum) / max(token_count, 1), token_count, epoch_seconds

    def validate(self, epoch: int, train_loss: float, token_count: int, epoch_seconds: float) -> None:
        """Rank 0 after each epoch: validation loss (and BLEU), the log row, the epoch's weights, the checkpoint."""
        args, state = self.args, self.state
        valid_loss = validation_loss(self.model, self.valid_examples, args.max_tokens, self.run.device)
        score_bleu = epoch % args.bleu_every == 0 or epoch == args.max_epochs
        valid_bleu = (validation_bleu(self.model, self.tokenizer, self.valid_pairs, args.valid_batch_size)
                      if score_bleu else None)
        row = {
            "epoch": epoch,
            "step": state["step"],
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": train_loss,
            "valid_loss": valid_loss,
            "valid_bleu": valid_bleu,
            "target_tokens_per_s": token_count * self.run.world_size / max(epoch_seconds, 1e-9),
            "train_seconds": state["train_seconds"],
        }
        self.history.append(row)
        with (self.out / LOG_FILE).open("a", encoding="utf-8") as log:
            log.write(json.dumps(row) + "\n")
        if score_bleu:
            improved = valid_bleu > state["best_bleu"]
            state["best_bleu"] = max(state["best_bleu"], valid_bleu)
            state["bad_epochs"] = 0 if improved else state["bad_epochs"] + 1
        self.epoch_dirs[epoch] = self.checkpoints / f"epoch-{epoch:03d}"
        self.model.save_pretrained(self.epoch_dirs[epoch])
        keep = (set(sorted(self.epoch_dirs)[-args.average_last:])
                | set(best_by_bleu(self.epoch_dirs, self.history)[: args.average_last]))
        for old in set(self.epoch_dirs) - keep:
            shutil.rmtree(self.epoch_dirs.pop(old), ignore_errors=True)
        self.write_checkpoint(self.last_checkpoint)
        bleu_text = f"{valid_bleu:.2f}" if score_bleu else "-"
        print(f"epoch {epoch} step {state['step']}: train loss {train_loss:.3f}, valid loss {valid_loss:.3f}, "
              f"valid BLEU {bleu_text}, {row['target_tokens_per_s']:.0f} target tokens/s", flush=True)

    def finish(self) -> None:
        """Rank 0 at the end: the curves, the final weights chosen on validation BLEU, the summary."""
        plot_curves(self.out / LOG_FILE, self.out / CURVES_FILE)
        selection = select_final_weights(self.model, self.tokenizer, self.valid_pairs, self.epoch_dirs, self.history,
                                         self.args)
        self.model.save_pretrained(self.out)
        summary = {"selection": selection, "epochs": self.state["epoch"], "steps": self.state["step"],
                   "train_minutes": round(self.state["train_seconds"] / 60, 2), "commands": self.state["commands"],
                   "parameters": self.model.num_parameters(), "config": dataclasses.asdict(self.config)}
        (self.out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {self.out}: {selection['chosen']}", flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    training = Training(args, argv)
    run, state = training.run, training.state
    stop = False
    while state["epoch"] < args.max_epochs and not stop:
        epoch = state["epoch"] + 1
        finished, train_loss, token_count, epoch_seconds = training.train_epoch(epoch)
        if not finished:  # stopped by --max-minutes inside the epoch
            if run.main:
                training.write_checkpoint(training.last_checkpoint)
            run.print(f"time limit reached in epoch {epoch}; resume with --resume")
            break
        state["epoch"], state["batch"] = epoch, 0
        if run.main:
            training.validate(epoch, train_loss, token_count, epoch_seconds)
        stop = run.all_agree(state["bad_epochs"] >= args.patience or time.time() > training.deadline)
    if run.main and training.epoch_dirs:
        training.finish()
    run.close()


if __name__ == "__main__":
    main()
