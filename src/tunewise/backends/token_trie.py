"""A token trie over the choices of a scoring request (pure data, plus its attention mask).

All choices' continuations are merged by common token prefix and flattened parents-first, so
one forward pass can score every choice: each node attends to the prompt and its ancestors.

Out of scope: running the model (``local.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["TokenTrie", "build_trie", "ancestor_mask", "common_prefix_len"]


@dataclass(frozen=True)
class TokenTrie:
    """All choices' continuations merged by common token prefix, flattened parents-first.

    Node ``i`` holds ``tokens[i]`` at ``depths[i]`` (1 = first continuation token) below
    ``parents[i]`` (-1 = the prompt). ``paths[c]`` lists the nodes spelling choice ``c``.
    """

    tokens: tuple[int, ...]
    parents: tuple[int, ...]
    depths: tuple[int, ...]
    paths: tuple[tuple[int, ...], ...]

    @property
    def internal(self) -> tuple[int, ...]:
        """Nodes with children: the only ones whose next-token distribution is needed."""
        return tuple(sorted({p for p in self.parents if p >= 0}))


def build_trie(continuations: Sequence[Sequence[int]]) -> TokenTrie:
    """Merge token sequences into a trie; identical prefixes share nodes."""
    tokens: list[int] = []
    parents: list[int] = []
    depths: list[int] = []
    children: dict[tuple[int, int], int] = {}
    paths = []
    for continuation in continuations:
        node, path = -1, []
        for token in continuation:
            key = (node, token)
            if key not in children:
                children[key] = len(tokens)
                tokens.append(token)
                parents.append(node)
                depths.append(depths[node] + 1 if node >= 0 else 1)
            node = children[key]
            path.append(node)
        paths.append(tuple(path))
    return TokenTrie(tuple(tokens), tuple(parents), tuple(depths), tuple(paths))


def ancestor_mask(trie: TokenTrie) -> torch.Tensor:
    """``(N, N)`` bool: row i is True at i and at each of its ancestors (parents precede children)."""
    n = len(trie.tokens)
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i, parent in enumerate(trie.parents):
        if parent >= 0:
            mask[i] = mask[parent]
        mask[i, i] = True
    return mask


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
