"""The KV cache of the last prompt, reused by the next request that shares its prefix.

Out of scope: what is fed after the prefix (``local.py`` decides: a trie, or generated tokens).
"""

from __future__ import annotations

from typing import Any

import torch

from .token_trie import common_prefix_len

__all__ = ["PrefixCache", "MIN_SHARED_PREFIX"]

MIN_SHARED_PREFIX = 16  # shorter shared prefixes are not worth the bookkeeping


class PrefixCache:
    """The KV cache of the last prompt prefilled at batch size 1, reused across requests.

    Invariant: the first ``len(self.ids)`` positions of ``self.cache`` belong to ``self.ids``;
    anything after them (trie nodes, generated tokens) is cropped off before the next reuse.
    """

    def __init__(self, model: Any) -> None:
        self._model = model
        self.ids: list[int] = []
        self.cache: Any = None

    def take(self, ids: list[int]) -> tuple[Any, int]:
        """Crop the cache to the prefix it shares with ``ids``: ``(cache, tokens reused)``.

        At least one token of ``ids`` is always left to feed (its logits are needed). The caller
        feeds ``ids[reused:]`` into the cache and then calls :meth:`commit`.
        """
        from transformers import DynamicCache

        reused = min(common_prefix_len(self.ids, ids), len(ids) - 1)
        if reused >= MIN_SHARED_PREFIX and self.cache is not None and self.cache.is_croppable:
            self.cache.crop(-(self.cache.get_seq_length() - reused))
        else:
            reused, self.cache = 0, DynamicCache(config=self._model.config)
        self.ids = []  # invalid until commit(): a failed forward may leave layers half-updated
        return self.cache, reused

    def commit(self, ids: list[int]) -> None:
        self.ids = list(ids)

    def prefill(self, ids: list[int]) -> tuple[Any, int, torch.Tensor]:
        """Return ``(cache holding ids, tokens reused, logits after the last id)``."""
        cache, reused = self.take(ids)
        new = torch.tensor([ids[reused:]], device=self._model.device)
        out = self._model(input_ids=new, cache=cache, use_cache=True, logits_to_keep=1)
        self.commit(ids)
        return cache, reused, out.logits[0, -1]

    def clear(self) -> None:
        self.ids, self.cache = [], None
