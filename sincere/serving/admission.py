"""Admission: request ids, the requests the server will not queue, and late requests after /stop.

A request thread asks for an id (the caller's when it is well formed and new in the run, else
one of the server's), then either records a refusal (bad input, ``reject``) or hands the request
over (``submit``): it is queued, or refused with an HTTP status and a message (``Refused``) and
recorded as rejected, or as failed when its model could not be loaded. After /stop the queues
drain and new requests are refused, except those the generator issued before it stopped that
are still on their way: until as many have arrived as it says it sent, or a short grace has
passed (``STRAGGLER_GRACE_S``), they are let in. Which models are served is
``sincere.serving.model_registry``'s; settling, ``sincere.serving.settling``'s.
"""

from __future__ import annotations

import itertools
import math
import threading
from dataclasses import dataclass, field
from typing import Any

from sincere.scheduling.queues import Request
from sincere.serving.model_registry import ModelRegistry
from sincere.serving.run_state import RunSetup, RunState
from sincere.serving.settling import Settler

STRAGGLER_GRACE_S = 10.0  # after /stop, how long requests issued before it may still arrive


class Refused(Exception):
    """A request the server will not queue: an HTTP status and a message for the caller."""

    def __init__(self, http_status: int, message: str, retry_after_s: int | None = None,
                 status: str = "rejected"):
        super().__init__(message)
        self.http_status = http_status
        self.message = message
        self.retry_after_s = retry_after_s
        self.status = status  # recorded as: rejected, or failed (the server's fault)


@dataclass(eq=False)
class Pending:
    """What a request thread waits on; the scheduler thread fills ``outcome`` and sets ``done``."""

    prompt: str = field(repr=False)
    done: threading.Event = field(default_factory=threading.Event)
    outcome: dict[str, Any] = field(default_factory=dict, repr=False)
    text: str = field(default="", repr=False)


class Admission:
    """Lets requests into the run's queues, or refuses them."""

    def __init__(self, setup: RunSetup, state: RunState, settler: Settler,
                 registry: ModelRegistry) -> None:
        self.setup = setup
        self.state = state
        self.settler = settler
        self.registry = registry
        self._ids = itertools.count()
        self._seen_ids: set[str] = set()
        self._ids_lock = threading.Lock()
        self.last_arrival_s = 0.0  # of the latest request queued

    def new_request_id(self, wanted: str | None = None) -> str | None:
        """The caller's id when given and new (None when it was used before), else a server id;
        ids are unique within the run."""
        with self._ids_lock:
            if wanted is not None:
                if wanted in self._seen_ids:
                    return None
                self._seen_ids.add(wanted)
                return wanted
            while True:
                request_id = f"s{next(self._ids):06d}"
                if request_id not in self._seen_ids:
                    self._seen_ids.add(request_id)
                    return request_id

    def reject(self, request_id: str, model: str, prompt_tokens: int | None = None) -> None:
        """Record a request that was refused on arrival (bad input); before the run begins its
        arrival is 0."""
        request = Request(request_id, model, self.state.now(), math.nan, prompt_tokens)
        self.settler.settle(request, "rejected", on_arrival=True)

    def submit(self, request_id: str, model: str, prompt: str) -> Pending:
        """Queue a validated request of a run that has begun, or raise Refused (and record it
        as rejected, or failed)."""
        pending = Pending(prompt)
        with self.state.cond:
            arrival_s = self.state.now()
            request = Request(request_id, model, arrival_s, arrival_s + self.setup.sla_s,
                              payload=pending)
            refusal = self._refusal(model)
            if refusal is None:
                self.state.book.add(request)
                self.last_arrival_s = arrival_s
                self.settler.note_received()
                self.state.cond.notify_all()
                return pending
        self.settler.settle(request, refusal.status, error=refusal.message, on_arrival=True)
        raise refusal

    def expecting_stragglers(self, now: float) -> bool:
        """After stop: requests the generator issued may still be on their way."""
        issued = self.state.issued
        return (issued is not None and self.settler.received() < issued
                and now < self.state.straggler_deadline_s)

    def _refusal(self, model: str) -> Refused | None:
        state, registry = self.state, self.registry
        if state.intake_closed or (state.draining
                                   and not self.expecting_stragglers(state.now())):
            return Refused(503, "the run is over: the server is draining after /stop and takes "
                                "no new requests")
        if model in registry.removed:
            return Refused(410, f"model {model!r} was removed from this server")
        if model in registry.broken:
            return Refused(503, f"model {model!r} could not be loaded "
                                f"({registry.broken[model]}); its requests fail until it is "
                                f"added again (POST /models)", status="failed")
        if model not in state.book.models:
            known = ", ".join(sorted(state.book.models)) or "none"
            return Refused(404, f"unknown model_alias {model!r}; served models: {known}")
        if state.book.total() >= self.setup.max_queue:
            return Refused(429, f"queue full ({self.setup.max_queue} requests waiting); "
                                "retry later",
                           retry_after_s=max(1, math.ceil(self.setup.sla_s / 10)))
        return None
