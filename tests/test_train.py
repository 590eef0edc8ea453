import json
import os
import socket
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch", reason="needs torch: pip install torch==2.13.0 first (the train extra)")
pytestmark = pytest.mark.torch
from safetensors.torch import load_file

from conftest import CORPUS, ROOT, write_corpus
from core.decoding import TorchTranslator
from core.train import cosine_lr, inverse_sqrt_lr, main as train_main, rdrop_loss, token_loss

TINY = ["--d-model", "16", "--n-heads", "2", "--d-ff", "32", "--n-encoder-layers", "2", "--n-decoder-layers", "2",
        "--dropout", "0", "--vocab-size", "300", "--max-tokens", "300", "--warmup-steps", "10", "--lr", "3e-3",
        "--threads", "1", "--precision", "fp32", "--device", "cpu", "--valid-batch-size", "50", "--average-last", "2"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    directory = tmp_path_factory.mktemp("corpus")
    pairs = CORPUS * 50  # 300 pairs
    train_source, train_target = write_corpus(directory, pairs, "train")
    valid_source, valid_target = write_corpus(directory, CORPUS, "valid")
    return ["--src-train", str(train_source), "--tgt-train", str(train_target),
            "--src-valid", str(valid_source), "--tgt-valid", str(valid_target)]


def read_log(directory):
    return [json.loads(line) for line in (directory / "train_log.jsonl").read_text().splitlines()]


def test_training_end_to_end(corpus, tmp_path):
    out = tmp_path / "model"
    train_main(corpus + TINY + ["--out", str(out), "--max-epochs", "4"])
    log = read_log(out)
    assert [row["epoch"] for row in log] == [1, 2, 3, 4]
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    assert log[-1]["valid_loss"] < log[0]["valid_loss"]
    assert all(row["target_tokens_per_s"] > 0 for row in log)
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["commands"][0].startswith("python -m core.train --src-train")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "training_curves.png", "training_summary.json"):
        assert (out / name).is_file(), name
    translator = TorchTranslator(out)
    assert len(translator.translate(["A man rides a bike."], beam_size=2)) == 1
    with pytest.raises(SystemExit, match="already holds a training run"):
        train_main(corpus + TINY + ["--out", str(out)])


def test_resume_after_interruption_reproduces_the_uninterrupted_run(corpus, tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    train_main(corpus + TINY + ["--out", str(straight), "--max-epochs", "2"])
    # A time limit that has already passed stops after the first batch, as an interruption would.
    train_main(corpus + TINY + ["--out", str(interrupted), "--max-epochs", "2", "--max-minutes", "1e-9"])
    state = json.loads((interrupted / "checkpoints/last/trainer_state.json").read_text())["trainer"]
    assert (state["epoch"], state["batch"], state["step"]) == (0, 1, 1)
    # Only data, folder and --resume: every other option comes back from the checkpoint.
    train_main(corpus + ["--out", str(interrupted), "--resume"])
    assert len(json.loads((interrupted / "training_summary.json").read_text())["commands"]) == 2
    assert [row["step"] for row in read_log(interrupted)] == [row["step"] for row in read_log(straight)]
    resumed, reference = load_file(str(interrupted / "model.safetensors")), load_file(str(straight / "model.safetensors"))
    for name, tensor in reference.items():
        assert (resumed[name] - tensor).abs().max().item() < 1e-6, name


def test_bleu_every_scores_some_epochs_and_the_last(corpus, tmp_path):
    out = tmp_path / "sparse"
    train_main(corpus + TINY + ["--out", str(out), "--max-epochs", "3", "--bleu-every", "2"])
    log = read_log(out)
    assert [row["valid_bleu"] is None for row in log] == [True, False, False]
    assert all(row["valid_loss"] > 0 for row in log)
    selection = json.loads((out / "training_summary.json").read_text())["selection"]
    assert "epoch 1" not in selection["valid_bleu_greedy"]  # unscored and not the last: no single-epoch candidate
    assert (out / "training_curves.png").is_file()


def test_resume_without_checkpoint_is_an_error(corpus, tmp_path):
    with pytest.raises(SystemExit, match="no checkpoint"):
        train_main(corpus + TINY + ["--out", str(tmp_path / "none"), "--resume"])


def test_learning_rate_schedule():
    assert inverse_sqrt_lr(1, 1e-3, 100) == pytest.approx(1e-5)
    assert inverse_sqrt_lr(100, 1e-3, 100) == pytest.approx(1e-3)
    assert inverse_sqrt_lr(400, 1e-3, 100) == pytest.approx(5e-4)
    assert cosine_lr(50, 1e-3, 100, 1100) == pytest.approx(5e-4)
    assert cosine_lr(100, 1e-3, 100, 1100) == pytest.approx(1e-3)
    assert cosine_lr(600, 1e-3, 100, 1100) == pytest.approx(5e-4)
    assert cosine_lr(1100, 1e-3, 100, 1100) == pytest.approx(0.0)
    assert cosine_lr(5000, 1e-3, 100, 1100) == pytest.approx(0.0)


def test_rdrop_loss_is_cross_entropy_plus_symmetric_kl():
    torch.manual_seed(0)
    targets = torch.tensor([[4, 5, 2], [6, 2, 0]])  # [B=2, T=3], one padded position
    first, second = torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    same = rdrop_loss(torch.cat([first, first]), targets, 0, alpha=5.0, label_smoothing=0.1)
    assert same.item() == pytest.approx(token_loss(first, targets, 0, label_smoothing=0.1).item(), abs=1e-6)
    p, q = first.softmax(-1), second.softmax(-1)
    kl_pq = (p * (p.log() - q.log())).sum(-1)  # [B, T]
    kl_qp = (q * (q.log() - p.log())).sum(-1)
    real = targets != 0
    expected_kl = ((kl_pq + kl_qp)[real]).sum().item() / real.sum().item() / 4
    cross_entropy = token_loss(torch.cat([first, second]), targets.repeat(2, 1), 0, label_smoothing=0.1).item()
    loss = rdrop_loss(torch.cat([first, second]), targets, 0, alpha=5.0, label_smoothing=0.1).item()
    assert loss == pytest.approx(cross_entropy + 5.0 * expected_kl, rel=1e-5)


def test_init_from_with_new_dropout_and_rdrop(corpus, tmp_path):
    base, tuned = tmp_path / "base", tmp_path / "tuned"
    train_main(corpus + TINY + ["--out", str(base), "--max-epochs", "1"])
    train_main(corpus + TINY + ["--out", str(tuned), "--max-epochs", "2", "--init-from", str(base),
                                "--dropout", "0.2", "--attention-dropout", "0.1", "--activation-dropout", "0.05",
                                "--rdrop", "5"])
    config = json.loads((tuned / "config.json").read_text())
    assert (config["dropout"], config["attention_dropout"], config["activation_dropout"], config["d_model"]) == (
        0.2, 0.1, 0.05, 16)
    assert TorchTranslator(tuned).model.decoder_layers[0].feed_forward.dropout.p == 0.05
    assert [row["epoch"] for row in read_log(tuned)] == [1, 2]
    assert "--rdrop 5" in json.loads((tuned / "training_summary.json").read_text())["commands"][0]
    with pytest.raises(SystemExit, match="--d-model 32 differs"):
        train_main(corpus + TINY + ["--out", str(tmp_path / "wider"), "--init-from", str(base), "--d-model", "32"])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_torchrun_on_cpu(corpus, tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
               "-m", "core.train", *corpus, *TINY, "--out", str(out), "--max-epochs", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "2 process(es)" in completed.stdout
    assert [row["epoch"] for row in read_log(out)] == [1, 2]
    TorchTranslator(out)
