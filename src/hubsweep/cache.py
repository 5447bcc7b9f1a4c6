"""What the trials of one process share, so a sweep pays each loading cost once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from hubsweep.data import TextDataset, load_dataset
from hubsweep.features import FeatureCache


@dataclass
class TrialCache:
    features: FeatureCache
    datasets: dict[str, TextDataset] = field(default_factory=dict)

    @classmethod
    def for_config(cls, cfg: DictConfig) -> TrialCache:
        return cls(FeatureCache.usable(cfg.cache_dir))

    def dataset(self, cfg: DictConfig, roles: Sequence[str]) -> TextDataset:
        key = OmegaConf.to_yaml(cfg, resolve=True) + repr(sorted(roles))
        if key not in self.datasets:
            self.datasets[key] = load_dataset(cfg, roles)
        return self.datasets[key]
