"""What the trials of one process share, so a sweep pays each loading cost once: datasets
(also on disk beside the feature cache, see data/dataset_cache.py), frozen features, and frozen
embedding layers (a BERT pair takes seconds to load; frozen, it
is never changed by training, so one loaded copy serves every trial)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from hubsweep.data.checks import check_splits
from hubsweep.data.dataset_cache import cached_dataset
from hubsweep.data.datasets import TextDataset, load_dataset
from hubsweep.embeddings.features import FeatureCache
from hubsweep.embeddings.loading import load_embedding_layer


@dataclass
class TrialCache:
    features: FeatureCache
    datasets: dict[str, TextDataset] = field(default_factory=dict)
    layers: dict[str, object] = field(default_factory=dict)
    dataset_load_s: float = 0.0  # seconds spent loading datasets it did not hold

    @property
    def build_s(self) -> float:
        """Seconds spent building what later runs reuse: feature-cache entries and datasets
        (a run's cache_build_s, see training/recorder.py)."""
        return self.features.build_s + self.dataset_load_s

    @classmethod
    def for_config(cls, cfg: DictConfig) -> TrialCache:
        return cls(FeatureCache.usable(cfg.cache_dir))

    def dataset(self, cfg: DictConfig, roles: Sequence[str]) -> TextDataset:
        key = OmegaConf.to_yaml(cfg, resolve=True) + repr(sorted(roles))
        if key not in self.datasets:
            started = time.perf_counter()
            directory = self.features.directory
            data = cached_dataset(
                directory, cfg, roles, lambda: load_dataset(cfg, roles), self.features.in_memory
            )
            check_splits(data)
            self.datasets[key] = data
            self.dataset_load_s += time.perf_counter() - started
        return self.datasets[key]

    def embedding_layer(self, cfg: DictConfig):
        """The loaded module; a frozen one is loaded once per process, a trainable one
        afresh (training changes its weights)."""
        if cfg.trainable:
            return load_embedding_layer(cfg)
        key = OmegaConf.to_yaml(cfg, resolve=True)
        if key not in self.layers:
            self.layers[key] = load_embedding_layer(cfg)
        return self.layers[key]
