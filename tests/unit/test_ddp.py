"""What PyTorch DDP promises, checked on 2 CPU ranks over gloo: identical weights on every rank after every
step, a step on 2 ranks of b slices equal to a step on one process of the 2b slices, and one checkpoint from a
2-rank training run. ``pytest -k ddp`` selects these tests."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss
from torch.nn.parallel import DistributedDataParallel

from lib import distributed
from lib.engine import TrainingStep, training_step
from lib.losses import build_loss
from lib.model import SPEC, build_network, read_checkpoint
from tests.conftest import APP_DIR, ROOT

RANKS = 2
PER_RANK = 2  # slices per rank and step


def _batch(seed: int, n: int) -> dict[str, torch.Tensor]:
    """``n`` training samples with every class present: a ring of wall with scar in a cavity, plus noise."""
    g = torch.Generator().manual_seed(seed)
    h, w = SPEC.roi_size_vox
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    label = torch.zeros(n, 1, h, w)
    for i in range(n):
        r = torch.hypot(yy - h / 2 - i, xx - w / 2 + i)
        label[i, 0][r < 30] = 1
        label[i, 0][(r >= 30) & (r < 40)] = 2
        label[i, 0][(r >= 30) & (r < 36) & (xx > w / 2)] = 3
        label[i, 0][(r >= 30) & (r < 33) & (xx > w / 2) & (yy > h / 2 + 5)] = 4
    image = label.repeat(1, SPEC.segmenter_channels, 1, 1) / 4 + 0.2 * torch.randn(
        n, SPEC.segmenter_channels, h, w, generator=g
    )
    loc_image = torch.randn(n, 1, 64, 64, generator=g)
    loc_heart = (torch.rand(n, 1, 64, 64, generator=g) > 0.7).float()
    return {"image": image, "label": label, "loc_image": loc_image, "loc_heart": loc_heart}


def _network(state: dict | None = None):
    torch.manual_seed(0)
    network = build_network(dropout=0.0)  # dropout draws differ between processes; DDP's promise is about the rest
    if state is not None:
        network.load_state_dict(state)
    return network


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def _rank_steps(device: str, state_path: str, out_dir: str, steps: int, optimiser: str) -> None:
    """One rank: load the shared start, wrap in DDP, take ``steps`` steps on its own part of each batch."""
    rank = distributed.rank()
    network = _network(torch.load(state_path))
    step = DistributedDataParallel(TrainingStep(network))
    optimizer = (
        torch.optim.SGD(network.parameters(), lr=0.1)
        if optimiser == "sgd"
        else torch.optim.AdamW(network.parameters(), lr=1e-3, weight_decay=1e-4)
    )
    seg_loss, loc_loss = build_loss(), DiceCELoss(to_onehot_y=True, softmax=True)
    for s in range(steps):
        batch = _batch(100 + s, RANKS * PER_RANK)
        mine = {k: v[rank * PER_RANK : (rank + 1) * PER_RANK] for k, v in batch.items()}
        training_step(step, optimizer, mine, seg_loss, loc_loss, mixed_precision=False)
        weights = _flat(network.parameters())
        gathered = [torch.zeros_like(weights) for _ in range(RANKS)]
        torch.distributed.all_gather(gathered, weights)
        torch.save(
            {"weights": gathered, "grads": _flat(p.grad for p in network.parameters())},
            os.path.join(out_dir, f"rank{rank}_step{s}.pt"),
        )


def test_ddp_two_ranks_of_b_slices_step_like_one_process_of_2b(tmp_path):
    start = _network().state_dict()
    torch.save(start, tmp_path / "start.pt")
    distributed.spawn_ranks(RANKS, "cpu", _rank_steps, str(tmp_path / "start.pt"), str(tmp_path), 1, "sgd")

    single = _network(start)
    optimizer = torch.optim.SGD(single.parameters(), lr=0.1)
    whole = _batch(100, RANKS * PER_RANK)
    training_step(
        TrainingStep(single), optimizer, whole, build_loss(), DiceCELoss(to_onehot_y=True, softmax=True),
        mixed_precision=False,
    )  # fmt: skip
    for rank in range(RANKS):
        result = torch.load(tmp_path / f"rank{rank}_step0.pt")
        grads = _flat(p.grad for p in single.parameters())
        assert torch.allclose(result["grads"], grads, rtol=1e-4, atol=1e-7), (grads - result["grads"]).abs().max()
        assert torch.allclose(result["weights"][rank], _flat(single.parameters()), rtol=1e-5, atol=1e-7)
    moved = (_flat(single.parameters()) - _flat(start.values())).abs().max()
    assert moved > 1e-4  # the step did something, so equality above is not that of two idle copies


def test_ddp_ranks_hold_identical_weights_after_every_step(tmp_path):
    torch.save(_network().state_dict(), tmp_path / "start.pt")
    distributed.spawn_ranks(RANKS, "cpu", _rank_steps, str(tmp_path / "start.pt"), str(tmp_path), 3, "adamw")
    previous = None
    for s in range(3):
        weights = torch.load(tmp_path / f"rank0_step{s}.pt")["weights"]
        assert all(torch.equal(weights[0], w) for w in weights[1:]), f"ranks differ after step {s + 1}"
        if previous is not None:
            assert not torch.equal(previous, weights[0])
        previous = weights[0]


def test_ddp_pooled_batch_dice_is_monai_dice_ce_on_one_process():
    """The loss written out for DDP is MONAI's DiceCELoss formula: equal when pooled over a single process."""
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 32, 32, requires_grad=True)
    label = torch.randint(0, 5, (3, 1, 32, 32))
    loss = build_loss()
    monai_value = loss(logits, label)
    probs = torch.softmax(logits, 1)
    target = torch.nn.functional.one_hot(label[:, 0], 5).movedim(-1, 1).float()
    inter, denom = (probs * target).sum((0, 2, 3))[1:], (probs + target).sum((0, 2, 3))[1:]
    written = (1 - (2 * inter + 1e-5) / (denom + 1e-5)).mean() + torch.nn.functional.cross_entropy(logits, label[:, 0])
    assert float(monai_value) == pytest.approx(float(written), rel=1e-6)


def test_ddp_training_run_on_two_ranks_writes_one_checkpoint(real_data, tmp_path):
    out = tmp_path / "model"
    command = [
        str(ROOT / ".venv" / "bin" / "torchrun") if (ROOT / ".venv" / "bin" / "torchrun").exists() else "torchrun",
        "--standalone",
        f"--nproc-per-node={RANKS}",
        str(APP_DIR / "scripts" / "train_default_model.py"),
        "--real", str(real_data), "--out", str(out / "scar.pt"), "--metrics", str(out / "metrics.json"),
        "--epochs", "1", "--phantoms", "2", "--limit-cases", "2", "--batch-size", "4", "--device", "cpu",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "scar.pt"]
    provenance = read_checkpoint(str(out / "scar.pt"))["provenance"]
    assert provenance["train"]["ranks"] == RANKS
    assert "rank 1 done; rank 0 validates and writes the checkpoint" in done.stderr
    assert np.isfinite(provenance["train"]["last_epoch"]["segmenter"])
