"""Which version answers a request: aliases, an A/B split sticky per user, and shadow mode.

A request names a model: an alias (``production``) or a version id (or a unique prefix of one).
With a :class:`Split` on ``alias_a``, a request for ``alias_a`` goes to ``alias_b``'s version (arm
``b``) when the user's bucket, a hash of the user id in [0, 1), is below ``fraction_b``; the same
user always lands in the same arm. In shadow mode the client always gets arm ``a`` and those users'
requests are also answered by ``alias_b`` (logged as arm ``shadow``). Requests without a user are
bucketed at random, so the fraction still holds but nothing is sticky.

A client can choose the version itself: by naming a version id, or, while a split is on, by naming the
split's B alias. Such a request bypasses the split. With ``allow_direct`` (the default) it is answered by
the version it names and logged as arm ``direct``, so it never counts for arm ``a`` or ``b`` in the A/B
comparison; with ``allow_direct=False`` it is refused (:class:`DirectRefused`, HTTP 403) and only aliases
answer (the split's own alias, and any alias no split is testing).

The alias map is re-read from the store at most once a second (and at once after an admin change),
and swapped whole: a request resolves its version once, so a promotion never changes it mid-way.

Out of scope: loading versions (``deployments.py``), editing aliases (``versions.py``).
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from dataclasses import dataclass

from ..errors import StoreError
from ..store import Store
from ..versions import resolve

__all__ = ["Split", "Route", "Router", "UnknownModel", "DirectRefused", "bucket"]


@dataclass(frozen=True)
class Split:
    """Send ``fraction_b`` of ``alias_a``'s users to ``alias_b`` (or, with ``shadow``, to it as well)."""

    alias_a: str = "production"
    alias_b: str | None = None
    fraction_b: float = 0.0
    shadow: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction_b <= 1.0:
            raise ValueError(f"fraction_b must be between 0 and 1, not {self.fraction_b}")


@dataclass(frozen=True)
class Route:
    version: str
    alias: str | None
    arm: str  # "a" | "b" | "direct"
    shadow_version: str | None = None
    shadow_alias: str | None = None


class UnknownModel(LookupError):
    """The requested model is neither an alias nor a version (its message is one sentence)."""


class DirectRefused(PermissionError):
    """The client named a version (or the split's B alias) on a server that does not allow it (one sentence)."""


def bucket(user: str) -> float:
    """A stable number in [0, 1) for a user id (sha256, not Python's per-process hash)."""
    digest = hashlib.sha256(b"tunewise-split\0" + user.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class Router:
    def __init__(self, store: Store, *, split: Split | None = None, refresh_s: float = 1.0,
                 allow_direct: bool = True) -> None:
        self.store, self.split, self.refresh_s, self.allow_direct = store, split, refresh_s, allow_direct
        self._lock = threading.Lock()
        self._aliases: dict[str, str] = {}
        self._loaded_at = float("-inf")
        self.refresh()

    def refresh(self) -> dict[str, str]:
        aliases = self.store.aliases()
        with self._lock:
            self._aliases, self._loaded_at = aliases, time.monotonic()
        return aliases

    @property
    def aliases(self) -> dict[str, str]:
        """alias -> version id (a snapshot: never mutated, only replaced)."""
        if time.monotonic() - self._loaded_at > self.refresh_s:
            return self.refresh()
        return self._aliases

    def _version(self, model: str, aliases: dict[str, str]) -> tuple[str, str | None]:
        if model in aliases:
            return aliases[model], model
        try:
            return resolve(self.store, model).id, None
        except StoreError:
            raise UnknownModel(f"The model '{model}' does not exist: name an alias "
                               f"({', '.join(sorted(aliases)) or 'none yet'}) or a version id.") from None

    def _is_direct(self, model: str, aliases: dict[str, str]) -> bool:
        """Does asking for ``model`` choose the version past the split (a version id, or the split's B alias)?"""
        split = self.split
        if model not in aliases:
            return True
        return split is not None and split.alias_b is not None and model == split.alias_b != split.alias_a

    def may_ask_for(self, model: str) -> bool:
        return self.allow_direct or not self._is_direct(model, self.aliases)

    def route(self, model: str, user: str | None) -> Route:
        aliases, split = self.aliases, self.split
        version, alias = self._version(model, aliases)
        if self._is_direct(model, aliases):
            if not self.allow_direct:
                ask = (f"'{split.alias_a}'" if split is not None and split.alias_b is not None
                       else f"an alias ({', '.join(sorted(aliases)) or 'none yet'})")
                raise DirectRefused(f"This server does not let clients choose the version; ask for {ask} "
                                    f"instead of '{model}'.")
            return Route(version=version, alias=alias, arm="direct")
        if split is None or model != split.alias_a or split.alias_b not in aliases or split.fraction_b <= 0:
            return Route(version=version, alias=alias, arm="a")
        chosen = (bucket(user) if user else random.random()) < split.fraction_b
        b = aliases[split.alias_b]
        if split.shadow:
            return Route(version=version, alias=alias, arm="a", shadow_version=b if chosen else None,
                         shadow_alias=split.alias_b if chosen else None)
        return Route(version=b, alias=split.alias_b, arm="b") if chosen else Route(version, alias, "a")
