"""The money cap of an API backend: refuse a call that could exceed the budget; count what was spent.

Before a batch is sent, :meth:`MoneyCap.admit` adds up each request's worst case: one token per
UTF-8 byte of the prompt (a byte-level BPE token is at least one byte) plus a few per message, at
the input price, and ``max_new_tokens`` (plus a reasoning model's thinking allowance) at the output price. When what is spent, plus what calls in
flight could still cost, plus that worst case would pass the budget, the whole batch is refused and
nothing of it is sent (so no answer that was paid for is thrown away). After each answer,
:meth:`MoneyCap.charge` books the cost of the usage the endpoint reported, with the formula of
``costs.py``, and frees the reservation.

An attempt that may have been billed without giving us an answer (a read timeout, a dropped
connection, an unreadable reply) is booked at its worst case as *unconfirmed*: the cap stays a
promise even when a provider bills a call we never saw answered.

Out of scope: the price table (``costs.py``) and HTTP (``openai.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ..costs import ApiPrice
from ..errors import BackendError
from .base import GenerationRequest

__all__ = ["Ledger", "MoneyCap", "Purse", "worst_case_tokens"]

_PER_MESSAGE_TOKENS = 4  # role and separators of the chat format
_PER_REQUEST_TOKENS = 3  # the assistant turn's opening


def worst_case_tokens(request: GenerationRequest) -> tuple[int, int]:
    """-> (most prompt tokens, most completion tokens) the request can be billed for."""
    prompt = sum(len(m.content.encode()) + len(m.role) + _PER_MESSAGE_TOKENS for m in request.prompt)
    schema = sum(len(c.encode()) for c in request.choices)  # a response_format schema is billed as input too
    return prompt + schema + _PER_REQUEST_TOKENS, request.max_new_tokens


class Ledger:
    """Money booked against one budget (None: counted, never refused): what was spent, what may have been billed
    without an answer, and the worst case of what is in flight; thread-safe. ``limit`` and ``scope`` name the
    budget in a refusal, ``remedy`` says how to go on."""

    def __init__(self, budget_usd: float | None, *, limit: str = "the budget", scope: str = "",
                 remedy: str = "raise the budget") -> None:
        self.budget_usd, self.limit, self.scope, self.remedy = budget_usd, limit, scope, remedy
        self.spent_usd = 0.0  # from the usage the endpoint reported
        self.unconfirmed_usd = 0.0  # worst case of attempts that may have been billed without an answer
        self._pending = 0.0  # worst case of calls admitted and not answered yet
        self._lock = threading.Lock()

    def reserve(self, worst: float, n: int, what: str) -> None:
        """Reserve ``worst`` for ``n`` requests to ``what``, or refuse them all."""
        with self._lock:
            self._refuse_beyond(worst, n, what)
            self._pending += worst

    def check(self, what: str) -> None:
        """Refuse to go on when what is booked and reserved already passes the budget (before a retry)."""
        with self._lock:
            self._refuse_beyond(0.0, 0, what)

    def settle(self, reserved: float, *, spent: float = 0.0, unconfirmed: float = 0.0) -> None:
        """Free a reservation and book what it turned out to cost (or may have cost)."""
        with self._lock:
            self._pending -= reserved
            self.spent_usd += spent
            self.unconfirmed_usd += unconfirmed

    def _refuse_beyond(self, worst: float, n: int, what: str) -> None:
        if self.budget_usd is None:
            return
        committed = self.spent_usd + self.unconfirmed_usd + self._pending
        if committed + worst > self.budget_usd + 1e-12:
            head = f"the next {n} request(s) to {what} could cost up to ${worst:.4f}, which" if n else \
                f"retrying a call to {what}"
            raise BackendError(
                f"Refused: {head} would exceed {self.limit} of ${self.budget_usd:g}{self.scope} (spent "
                f"${self.spent_usd:.4f}, "
                f"${self.unconfirmed_usd + self._pending:.4f} more possibly billed or in flight); {self.remedy} "
                "to go on, and the calls already answered stay cached.")


class Purse(Ledger):
    """One money budget shared by several API backends: a run's ``constraints.budget_usd`` over every model it
    weighs, so two API models cannot each spend the whole budget. Each :class:`MoneyCap` books against it
    what it books against its own ledger."""

    def __init__(self, budget_usd: float) -> None:
        super().__init__(budget_usd, limit="the run's budget", scope=" over all its models",
                         remedy="raise constraints.budget_usd")


class MoneyCap:
    """What an API backend has spent and may still spend: its own :class:`Ledger` and, when the run weighs
    several models, the run's shared one (``purse``); thread-safe.

    ``price`` is ``(table key, ApiPrice)`` or None when the price table has no entry (then nothing
    is counted in dollars, and a budget cannot be enforced: the constructor refuses one).
    """

    def __init__(self, *, what: str, budget_usd: float | None, price: tuple[str, ApiPrice] | None,
                 purse: Purse | None = None) -> None:
        if budget_usd is not None and price is None:
            raise BackendError(
                f"The budget of ${budget_usd:g} cannot be enforced for {what}: the price table has no price for "
                "this model; add one under the backend's prices (such as {api: {<model>: {input: 0, output: 0}}}) "
                "or set its budget_usd to null.")
        if purse is not None and price is None:
            raise BackendError(
                f"The run's budget of ${purse.budget_usd:g} cannot be enforced for {what}: the price table has no "
                "price for this model; give the model its prices in the task file (models: [{id: ..., prices: "
                "{input: ..., output: ...}}]).")
        self.what, self.price, self.purse = what, price, purse
        self.extra_completion_tokens = 0  # a reasoning model's thinking allowance, billed as completion tokens
        self.own = Ledger(budget_usd)
        self._ledgers = (self.own,) if purse is None else (self.own, purse)
        self._admitting = threading.Lock()  # one batch admitted at a time, on every ledger or none

    @property
    def budget_usd(self) -> float | None:
        return self.own.budget_usd

    @property
    def spent_usd(self) -> float:
        return self.own.spent_usd

    @property
    def unconfirmed_usd(self) -> float:
        return self.own.unconfirmed_usd

    def worst_case_usd(self, request: GenerationRequest) -> float:
        if self.price is None:
            return 0.0
        prompt, completion = worst_case_tokens(request)
        p = self.price[1]
        return (prompt * p.input + (completion + self.extra_completion_tokens) * p.output) / 1e6

    def admit(self, requests: Sequence[GenerationRequest]) -> list[float]:
        """Reserve each request's worst case on every ledger (this endpoint's, then the run's), or refuse them
        all; -> the reservations, in order."""
        worst = [self.worst_case_usd(r) for r in requests]
        reserved: list[Ledger] = []
        with self._admitting:
            try:
                for ledger in self._ledgers:
                    ledger.reserve(sum(worst), len(worst), self.what)
                    reserved.append(ledger)
            except BackendError:
                for ledger in reserved:  # a refusal by the run's ledger frees what this endpoint's had reserved
                    ledger.settle(sum(worst))
                raise
        return worst

    def check(self) -> None:
        """Refuse to go on when what is booked and reserved already passes a budget (before a retry)."""
        for ledger in self._ledgers:
            ledger.check(self.what)

    def charge(self, reserved: float, *, prompt_tokens: int, cached_tokens: int, completion_tokens: int) -> float:
        """Book an answer's reported usage and free its reservation; -> its cost in USD."""
        cost = self.cost(prompt_tokens=prompt_tokens, cached_tokens=cached_tokens, completion_tokens=completion_tokens)
        for ledger in self._ledgers:
            ledger.settle(reserved, spent=cost)
        return cost

    def book_unconfirmed(self, reserved: float) -> None:
        for ledger in self._ledgers:
            ledger.settle(0.0, unconfirmed=reserved)

    def release(self, reserved: float) -> None:
        """Free the reservation of a call that ended without an answer."""
        for ledger in self._ledgers:
            ledger.settle(reserved)

    def cost(self, *, prompt_tokens: int, cached_tokens: int, completion_tokens: int) -> float:
        if self.price is None:
            return 0.0
        p = self.price[1]
        cached = min(cached_tokens, prompt_tokens)
        cached_price = p.input if p.cached_input is None else p.cached_input
        return ((prompt_tokens - cached) * p.input + cached * cached_price + completion_tokens * p.output) / 1e6
