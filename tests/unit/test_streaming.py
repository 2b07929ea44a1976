"""Training streams studies from disk: every slice once per epoch, a bounded number of studies in memory, and
equal, disjoint shards for DDP ranks."""

from __future__ import annotations

import gc
import weakref
from collections import Counter

import pytest
import torch

from lib import engine
from lib.engine import BUFFER_STUDIES, StreamingSlices, Study, StudyFile


class _Loads:
    """Counts the studies alive at once (loaded and not yet freed)."""

    def __init__(self):
        self.alive = 0
        self.peak = 0

    def made(self, study: Study) -> Study:
        self.alive += 1
        self.peak = max(self.peak, self.alive)
        weakref.finalize(study, self._freed)
        return study

    def _freed(self):
        self.alive -= 1


class _TinyFile(StudyFile):
    def load(self) -> Study:
        depth = self.slices
        study = Study(self.name, torch.zeros(1, 8, 8, depth), torch.zeros(1, 8, 8, depth, dtype=torch.long), 1.0)
        return LOADS.made(study)


LOADS = _Loads()


@pytest.fixture
def samples(monkeypatch):
    """Replace the augmenting sampler by one that names the slice it was asked for."""
    monkeypatch.setattr(engine.SliceSampler, "__call__", lambda self, study, k: (study.name, k))
    LOADS.alive = LOADS.peak = 0
    gc.collect()


def _files(n: int) -> list[StudyFile]:
    return [_TinyFile(f"s{i:04d}", "", "", slices=5 + i % 4) for i in range(n)]


def test_every_slice_once_per_epoch_with_a_bounded_number_of_studies_in_memory(samples):
    files = _files(60)
    stream = StreamingSlices(files, seed=3)
    for _ in range(2):  # two epochs, two orders
        seen = Counter()
        for name, k in stream:
            seen[(name, k)] += 1  # a study's last reference goes with the buffer: freed at once (refcount)
        assert len(seen) == sum(f.slices for f in files) == len(stream)
        assert set(seen.values()) == {1}
    assert LOADS.peak <= BUFFER_STUDIES + 1  # the buffer, plus the study being read in


def test_ranks_get_equal_disjoint_shards(samples, monkeypatch):
    files = _files(9)
    shards = []
    for rank in range(2):
        monkeypatch.setattr(engine.distributed, "rank", lambda rank=rank: rank)
        monkeypatch.setattr(engine.distributed, "world_size", lambda: 2)
        shards.append(list(StreamingSlices(files, seed=1)))
    assert len(shards[0]) == len(shards[1]) == sum(f.slices for f in files) // 2
    studies = [{name for name, _ in shard} for shard in shards]
    assert not studies[0] & studies[1]  # each rank reads its own studies
    assert studies[0] | studies[1] == {f.name for f in files}


def test_more_ranks_than_studies_still_gives_every_rank_its_steps(samples, monkeypatch):
    monkeypatch.setattr(engine.distributed, "rank", lambda: 3)
    monkeypatch.setattr(engine.distributed, "world_size", lambda: 4)
    assert len(list(StreamingSlices(_files(2), seed=0))) == (5 + 6) // 4


def test_a_few_studies_are_read_once_for_all_epochs(samples, monkeypatch):
    reads = Counter()
    original = _TinyFile.load

    def counted(self):
        reads[self.name] += 1
        return original(self)

    monkeypatch.setattr(_TinyFile, "load", counted)
    stream = StreamingSlices(_files(5), seed=0)
    for _ in range(3):
        assert len(list(stream)) == len(stream)
    assert set(reads.values()) == {1}
