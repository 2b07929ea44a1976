"""Training and validation of :class:`~lib.model.ScarNet`, with torch and MONAI only.

Used by the server's train task and by the default-model script, so a checkpoint trained offline and
one fine-tuned from corrected labels come from the same code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from monai.data import DataLoader, Dataset, IterableDataset, MetaTensor, set_track_meta
from monai.data.utils import worker_init_fn as monai_worker_init
from monai.losses import DiceCELoss
from monai.transforms import Compose
from monai.utils import set_determinism
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, get_worker_info

from . import distributed
from .constants import HEART, IMAGE, LABEL, LOCALISER_HEART, LOCALISER_IMAGE, MVO, SCAR_PROBABILITY, TOTAL_SCAR
from .losses import build_loss
from .metrics import overlap_dice, structure_overlap, voxel_volume_ml
from .model import SPEC, ScarNet, crop_at, normalise_intensity, with_neighbours
from .transforms.anatomy import AnatomicalCleanup
from .transforms.pipelines import preprocess
from .transforms.slice_augment import TrainingAugmentation

logger = logging.getLogger(__name__)

LOCALISER_FOV_VOX = (256, 256)  # 384 mm at the model spacing: a whole adult chest


@dataclass
class Study:
    """A study on the model grid: image normalised, label integer; both (1, H, W, D)."""

    name: str
    image: torch.Tensor
    label: torch.Tensor
    voxel_ml: float  # volume of one voxel on the model grid (in-plane resampled, slices as acquired)
    # (1, H, W, D) in [0, 1]: a semi-automatic rule's own scar probability (lib.semiauto), for losses
    # that train on it (RuleSoftTargetLoss); None for expert or corrected labels.
    scar_probability: torch.Tensor | None = None

    @cached_property
    def heart_center_vox(self) -> tuple[int, int]:
        heart = torch.isin(self.label[0], torch.tensor(HEART)).any(dim=-1)
        if not heart.any():
            return self.label.shape[1] // 2, self.label.shape[2] // 2
        rows, cols = torch.nonzero(heart, as_tuple=True)
        return int(rows.float().mean()), int(cols.float().mean())


def load_study(image, label, name: str = "", affine: np.ndarray | None = None) -> Study:
    """Put one study on the model grid with the shared :func:`preprocess`.

    Args:
        image, label: file paths (NIfTI, DICOM folder...) or (H, W, D) arrays; arrays need ``affine``.
        affine: RAS voxel-to-mm affine for arrays.
    """
    if isinstance(image, str):
        data = Compose(preprocess([IMAGE, LABEL]))({IMAGE: image, LABEL: label})
    else:
        meta = {"affine": torch.as_tensor(affine, dtype=torch.float64)}
        data = {
            IMAGE: MetaTensor(np.asarray(image, np.float32), meta=dict(meta)),
            LABEL: MetaTensor(np.asarray(label, np.float32), meta=dict(meta)),
        }
        data = Compose(preprocess([IMAGE, LABEL], load=False))(data)
    name = name or (image if isinstance(image, str) else "study")
    spacing = [float(v) for v in data[IMAGE].pixdim[:3]]
    return Study(
        name=name,
        image=data[IMAGE].as_tensor().float(),
        label=data[LABEL].as_tensor().round().long(),
        voxel_ml=voxel_volume_ml(spacing),
    )


class SliceSampler:
    """One training sample from one slice of a study, cropped around the heart as inference crops it.

    The crop centre is the labelled heart's centre plus a random offset, so the segmenter learns to
    cope with a localiser that misses by a centimetre or two. The localiser sample is the whole slice.
    Samples are not augmented here: :func:`train` augments each batch on the training device
    (:class:`~lib.transforms.slice_augment.TrainingAugmentation`), so a GPU is not left waiting for CPUs.
    """

    def __init__(self, soft: bool, jitter_vox: float = 8.0):
        self.soft = soft
        self.jitter_vox = jitter_vox

    def __call__(self, study: Study, k: int) -> dict:
        slices = study.image.permute(3, 0, 1, 2)  # (D, 1, H, W)
        labels = study.label.permute(3, 0, 1, 2).float()
        offset = np.clip(np.random.normal(0, self.jitter_vox, 2), -2.5 * self.jitter_vox, 2.5 * self.jitter_vox)
        center = tuple(int(c + o) for c, o in zip(study.heart_center_vox, offset, strict=True))
        crops = with_neighbours(normalise_intensity(crop_at(slices, center, SPEC.roi_size_vox)))
        crop_labels = crop_at(labels, center, SPEC.roi_size_vox)
        h, w = slices.shape[-2:]
        shift = np.random.randint(-24, 25, 2)
        loc_center = (h // 2 + int(shift[0]), w // 2 + int(shift[1]))
        sample = {
            IMAGE: crops[k],
            LABEL: crop_labels[k],
            LOCALISER_IMAGE: crop_at(slices[k : k + 1], loc_center, LOCALISER_FOV_VOX)[0],
            LOCALISER_HEART: (crop_at(labels[k : k + 1], loc_center, LOCALISER_FOV_VOX)[0] > 0).float(),
        }
        if self.soft:
            soft = study.scar_probability.permute(3, 0, 1, 2).float()
            sample[SCAR_PROBABILITY] = crop_at(soft[k : k + 1], center, SPEC.roi_size_vox)[0]
        return {key: torch.as_tensor(v).float() for key, v in sample.items()}


class SliceDataset(Dataset):
    """Training samples of studies held in memory, one per slice (:class:`SliceSampler`)."""

    def __init__(self, studies: Sequence[Study], jitter_vox: float = 8.0):
        self.studies = list(studies)
        self.index = [(i, k) for i, s in enumerate(self.studies) for k in range(s.image.shape[-1])]
        soft = any(s.scar_probability is not None for s in self.studies)
        if soft and not all(s.scar_probability is not None for s in self.studies):
            raise ValueError("either every study carries a scar_probability or none does.")
        self.sampler = SliceSampler(soft, jitter_vox)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        s, k = self.index[i]
        return self.sampler(self.studies[s], k)


@dataclass(frozen=True)
class StudyFile:
    """A labelled study on disk, and its number of slices (from its header: nothing is loaded to count)."""

    name: str
    image: str
    label: str
    slices: int

    @classmethod
    def counted(cls, name: str, image: str, label: str) -> StudyFile:
        """The study with its slices counted from the image header."""
        # Imported here: label_io brings the server's readers (SimpleITK, pydicom, FastAPI errors), and the rest
        # of this module trains where only torch and MONAI are installed (a GPU machine's stock image).
        from .label_io import read_geometry

        return cls(name, image, label, slices=read_geometry(image).size[2])

    def load(self) -> Study:
        return load_study(self.image, self.label, name=self.name)


class LazyStudies(Sequence):
    """Studies loaded from disk when asked for and not kept: validation over any number of studies in the
    memory of one."""

    def __init__(self, files: Sequence[StudyFile]):
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return LazyStudies(self.files[i])
        return self.files[i].load()


# Studies a streaming loader holds at once (per loader worker): enough to mix slices of several hearts
# in each batch, few enough that memory does not grow with the dataset.
BUFFER_STUDIES = 8


class StreamingSlices(IterableDataset):
    """Training slices read study by study from disk, at most ``buffer_studies`` studies in memory.

    Each epoch the study order is reshuffled; under DDP the studies are dealt into one shard per rank
    balanced by slice count (every study to each rank when there are fewer studies than ranks), and a
    rank's shard likewise into one per loader worker. Slices are drawn at random from the studies in the
    buffer; a study leaves the buffer when its slices are used and the next one is read. Every rank yields
    ``total slices // ranks`` samples, so the ranks take the same number of steps, which DDP needs: with
    one rank and one worker that is every slice once per epoch; with several, a shard a few slices larger
    or smaller than its quota skips or repeats those few. Memory: ``buffer_studies`` studies on the model
    grid per worker (plus the one being read), whatever the number of studies. When a worker's studies all
    fit in the buffer they stay loaded from one epoch to the next: a fine-tuning run on a few corrected
    studies reads each once (on one rank; under DDP the shards change from epoch to epoch).
    """

    def __init__(self, files: Sequence[StudyFile], *, buffer_studies: int = BUFFER_STUDIES, seed: int = 0):
        if not files:
            raise ValueError("StreamingSlices needs at least one study.")
        self.files = list(files)
        self.buffer_studies = buffer_studies
        self.seed = seed
        self.epoch = 0  # counted per iteration, in each worker's own copy (persistent workers)
        self.sampler = SliceSampler(soft=False)
        self._kept: dict[int, Study] = {}  # a worker's studies, when they all fit in the buffer

    def __len__(self) -> int:
        """Samples this rank yields per epoch."""
        return sum(f.slices for f in self.files) // distributed.world_size()

    def _balanced(self, order: np.ndarray, parts: int, part: int) -> np.ndarray:
        """The ``part``-th of ``parts`` shards of the studies in ``order``, dealt so that the shards' slice
        counts differ by at most one study's: each study goes to the shard with the fewest slices so far."""
        if parts == 1:
            return order
        if order.size < parts:
            return order  # fewer studies than shards: every shard reads them all
        totals = np.zeros(parts, int)
        shards: list[list[int]] = [[] for _ in range(parts)]
        for index in order:
            target = int(np.argmin(totals))
            shards[target].append(int(index))
            totals[target] += self.files[index].slices
        return np.asarray(shards[part], int)

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        rank, ranks = distributed.rank(), distributed.world_size()
        worker = get_worker_info()
        worker_id, workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        # One order of studies for all ranks and workers (the shards must agree); draws within a shard are
        # each worker's own, so no two workers yield the same sequence.
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.files))
        mine = self._balanced(self._balanced(order, ranks, rank), workers, worker_id)
        rng = np.random.default_rng([self.seed, epoch, rank, worker_id])
        quota = len(self) // workers + (worker_id < len(self) % workers)
        keep = len(mine) <= self.buffer_studies
        self._kept = {i: study for i, study in self._kept.items() if keep and i in set(mine.tolist())}
        queue: list[int] = []
        buffer: list[tuple[Study, list[int]]] = []
        for _ in range(quota):
            while len(buffer) < self.buffer_studies and (queue or not buffer):
                if not queue:
                    queue = list(rng.permutation(mine))
                index = int(queue.pop())
                study = self._kept.get(index) or self.files[index].load()
                if keep:
                    self._kept[index] = study
                buffer.append((study, list(rng.permutation(study.image.shape[-1]))))
            j = int(rng.integers(len(buffer)))
            picked, left = buffer[j]
            yield self.sampler(picked, int(left.pop()))
            if not left:
                buffer.pop(j)
            del picked  # the buffer holds the only reference: a finished study is freed at once


def _slice_worker_init(worker_id: int) -> None:
    """MONAI's per-worker seeding, then no MetaTensor bookkeeping in the worker.

    Training samples are plain 2D crops whose geometry nobody reads back, so the workers track none.
    Only loader workers switch it off: the flag is process-global, and the main process still needs the
    metadata to load and judge studies.
    """
    monai_worker_init(worker_id)
    set_track_meta(False)


def predict_label(
    network: ScarNet, image: torch.Tensor, device: torch.device | str = "cpu", *, flip_tta: bool = True
) -> torch.Tensor:
    """Label a (1, H, W, D) study on the model grid exactly as inference does, before inversion.

    Puts ``network`` in eval mode: a freshly built or loaded network is in train mode, and its dropout
    would make the answer random.
    """
    network.eval()
    with torch.no_grad():
        probs = network(image[None].to(device), flip_tta=flip_tta)[0]
    return label_from_probs(probs)


def label_from_probs(probs: torch.Tensor) -> torch.Tensor:
    """A label as inference makes it from class probabilities: argmax, then the anatomical clean-up.

    Shape: (K, H, W, D) -> (1, H, W, D).
    """
    return AnatomicalCleanup()(probs.argmax(dim=0, keepdim=True).cpu())


def judge(name: str, pred: np.ndarray, truth: np.ndarray, voxel_ml: float) -> dict:
    """One study's Dice and voxel overlap per clinical structure, and predicted scar volume.

    Shape: ``pred`` and ``truth`` (H, W, D) integer EMIDEC classes on the same grid.
    """
    overlap = structure_overlap(pred, truth)  # pooled Dice sums these over the set
    return {
        "name": name,
        **overlap_dice(overlap),
        "overlap": overlap,
        "predicted_scar_ml": float(np.isin(pred, TOTAL_SCAR).sum() * voxel_ml),
        "voxel_ml": voxel_ml,
        "truth_has_scar": bool(np.isin(truth, TOTAL_SCAR).any()),
        "truth_has_mvo": bool((truth == MVO).any()),
    }


def validate(
    network: ScarNet, studies: Sequence[Study], device: torch.device | str = "cpu", *, flip_tta: bool = True
) -> list[dict]:
    """:func:`judge` of each study's prediction, in eval mode."""
    network.eval()
    return [
        judge(
            s.name,
            predict_label(network, s.image, device, flip_tta=flip_tta)[0].numpy(),
            s.label[0].numpy(),
            s.voxel_ml,
        )
        for s in studies
    ]


def cpu_has_bf16_matrix_units() -> bool:
    """True on CPUs with AMX tiles, where bf16 autocast trains the segmenter about 1.45x faster than fp32.

    Measured on this project's 2-core Xeon (a 32x128x128 segmenter step: 0.47 s fp32, 0.32 s bf16);
    without AMX, bf16 on CPU is emulated and slower, which the default-model script warns about. The
    check is a private torch function, hence the guard.
    """
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(check and check())


class TrainingStep(nn.Module):
    """The network's two training heads in one ``forward``, so that DDP, which synchronises the parameters
    used in ``forward``, covers the localiser and the segmenter alike.

    Shape: crops (N, C, *roi_size_vox) and localiser slices (N, 1, H, W) -> (segmenter logits, localiser
    logits) as :meth:`ScarNet.segment` and :meth:`ScarNet.localiser_logits` give them.
    """

    def __init__(self, network: ScarNet):
        super().__init__()
        self.network = network

    def forward(self, crops: torch.Tensor, localiser_slices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.network.segment(crops), self.network.localiser_logits(localiser_slices)


def training_step(
    step: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict,
    seg_loss: nn.Module,
    loc_loss: nn.Module,
    *,
    mixed_precision: bool,
) -> tuple[float, float]:
    """One optimiser step on a batch: segmenter loss plus half the localiser's; returns both losses.

    ``step`` is a :class:`TrainingStep`, or one wrapped in ``DistributedDataParallel`` (then each rank
    passes its own part of the batch and the gradients are averaged over ranks).
    """
    # Plain tensors: a loader in the main process yields MetaTensors, whose metadata nothing here reads and
    # whose batched metadata cannot follow the one-hot and pooling of the distributed loss.
    batch = {k: v.as_tensor() if isinstance(v, MetaTensor) else v for k, v in batch.items()}
    device_type = batch[IMAGE].device.type
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=mixed_precision):
        seg_logits, loc_logits = step(batch[IMAGE], batch[LOCALISER_IMAGE])
        label = batch[LABEL].round().long()
        if getattr(seg_loss, "needs_scar_probability", False):
            if SCAR_PROBABILITY not in batch:
                raise ValueError(f"{type(seg_loss).__name__} needs studies with a scar_probability.")
            seg = seg_loss(seg_logits.float(), label, batch[SCAR_PROBABILITY])
        else:
            seg = seg_loss(seg_logits.float(), label)
        coarse = torch.nn.functional.max_pool2d(batch[LOCALISER_HEART], SPEC.localiser_downsample)
        loc = loc_loss(loc_logits.float(), coarse)
    (seg + 0.5 * loc).backward()
    optimizer.step()
    return float(seg.detach()), float(loc.detach())


def train(
    network: ScarNet,
    studies: Sequence[Study] | StreamingSlices,
    *,
    epochs: int,
    lr: float,
    device: torch.device | str = "cpu",
    batch_size: int = 16,
    num_workers: int = 0,
    seed: int = 0,
    loss: torch.nn.Module | None = None,
    cosine_schedule: bool = False,
    on_epoch: Callable[[int, dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    bf16: bool | None = None,
) -> list[dict]:
    """Fit localiser and segmenter together; returns one dict of mean losses and seconds per epoch.

    ``studies`` are held in memory (the default-model script's) or streamed from disk
    (:class:`StreamingSlices`, the train task's: memory bounded whatever the number of studies).

    Mixed precision (bf16 autocast) on CUDA; on CPU only when ``bf16`` is True (see
    :func:`cpu_has_bf16_matrix_units`), else fp32. ``cosine_schedule`` decays the learning rate
    to 2 % of ``lr`` over the run (training from scratch); fine-tuning keeps it constant.
    ``should_stop`` is asked before every step; it may return True (stop after this epoch's record) or
    raise to abandon the run at once. Under DDP (:mod:`lib.distributed` initialised with several ranks)
    every rank calls this with the same arguments and trains on its shard of the slices; ``on_epoch`` and
    ``should_stop`` are called on every rank (callers validate and write on rank 0 only), and ``should_stop``
    must answer alike on all ranks (a rank that stops alone leaves the others waiting).
    """
    if not studies:
        raise ValueError("train needs at least one labelled study.")
    # Each rank its own augmentation draws; the weights are rank 0's (DDP broadcasts them on wrapping).
    set_determinism(seed + distributed.rank())
    device = torch.device(device)
    mixed_precision = device.type == "cuda" if bf16 is None else bf16
    network.to(device).train()
    seg_loss = loss if loss is not None else build_loss()
    loc_loss = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-4)
    schedule = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=lr * 0.02)
        if cosine_schedule
        else None
    )
    streaming = isinstance(studies, StreamingSlices)
    dataset = studies if streaming else SliceDataset(studies)
    step: nn.Module = TrainingStep(network)
    sampler = None
    if distributed.active():
        # Every rank trains on its own shard of the slices (reshuffled each epoch, the same partition on all
        # ranks); gradients are averaged across ranks in backward.
        step = DistributedDataParallel(step, device_ids=[device.index] if device.type == "cuda" else None)
        sampler = None if streaming else DistributedSampler(dataset, shuffle=True, seed=seed)
    shard = len(sampler) if sampler is not None else len(dataset)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=sampler is None and not streaming,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=shard > batch_size,
        persistent_workers=num_workers > 0,
        worker_init_fn=_slice_worker_init,
    )
    augment = TrainingAugmentation()
    history = []
    for epoch in range(epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        start, totals, steps = time.time(), {"segmenter": 0.0, "localiser": 0.0}, 0
        for batch in loader:
            if should_stop and should_stop():
                break
            batch = augment({k: v.to(device, non_blocking=True) for k, v in batch.items()})
            seg, loc = training_step(step, optimizer, batch, seg_loss, loc_loss, mixed_precision=mixed_precision)
            totals["segmenter"] += seg
            totals["localiser"] += loc
            steps += 1
        record = {
            "epoch": epoch + 1,
            **{k: distributed.mean_over_ranks(v / max(steps, 1)) for k, v in totals.items()},
            "seconds": round(time.time() - start, 2),
        }
        if schedule:
            schedule.step()
        history.append(record)
        logger.info("epoch %d: %s", epoch + 1, record)
        if on_epoch:
            on_epoch(epoch, record)
        if should_stop and should_stop():
            break
    network.eval()
    return history
