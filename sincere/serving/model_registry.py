"""The model registry: which models the run serves, which were removed, which cannot be loaded.

A model is served while it has a queue (``RunState.book``). ``add`` serves another one (it
needs a profile) or tries a broken one again; ``remove`` stops serving one: its queued requests
fail (410 for the caller) and the scheduler thread takes it off the device and out of the host
cache before its next decision; ``mark_broken`` records a model that failed to load: its queued
requests fail now, later ones on arrival (``sincere.serving.admission``), the other models go
on. Which model is on the device is the engine's (``Engine.resident``).
"""

from __future__ import annotations

import logging

from sincere.serving.run_state import RunSetup, RunState
from sincere.serving.settling import Settler

log = logging.getLogger("sincere.serving")


class ModelRegistry:
    """The served, removed and broken models of one run; ``removed`` and ``broken`` are read
    and changed under the run's ``cond``."""

    def __init__(self, setup: RunSetup, state: RunState, settler: Settler) -> None:
        self.setup = setup
        self.state = state
        self.settler = settler
        self.removed: set[str] = set()
        self.broken: dict[str, str] = {}  # model -> why it could not be loaded
        self._to_unload: str | None = None

    def models(self) -> list[str]:
        """The models served now."""
        with self.state.cond:
            return sorted(self.state.book.models)

    def removed_models(self) -> list[str]:
        with self.state.cond:
            return sorted(self.removed)

    def broken_models(self) -> dict[str, str]:
        """Models that failed to load, and why."""
        with self.state.cond:
            return dict(self.broken)

    def add(self, model: str) -> None:
        """Serve another model (its profile must be in the profile set); a model that failed
        to load is tried again."""
        self.setup.profiles[model]
        with self.state.cond:
            self.removed.discard(model)
            self.broken.pop(model, None)
            self.state.book.add_model(model)
            self.state.cond.notify_all()

    def mark_broken(self, model: str, reason: str) -> None:
        """``model`` cannot be loaded: its queued requests fail now, later ones on arrival,
        and it is not tried again unless added again (the other models go on)."""
        with self.state.cond:
            self.broken[model] = reason
            left = self.state.book.take(model, self.state.book.length(model))
        for request in left:
            self.settler.settle(request, "failed", error=f"model {model!r} could not be loaded "
                                                         f"({reason})")
        log.error("model %s marked as not loadable (%s); %d queued requests failed", model,
                  reason, len(left))

    def remove(self, model: str) -> int:
        """Stop serving a model: its queued requests end as failed (410 for the caller), and it
        is not loaded again. Returns how many queued requests it had."""
        with self.state.cond:
            if model not in self.state.book.models:
                raise KeyError(model)
            left = self.state.book.remove_model(model)
            self.removed.add(model)
            self._to_unload = model
            self.state.cond.notify_all()
        for request in left:
            self.settler.settle(request, "failed", error=f"model {model!r} was removed",
                                http_status=410)
        log.info("model %s removed; %d queued requests failed", model, len(left))
        return len(left)

    def unload_removed(self) -> None:
        """The scheduler thread, holding ``cond``: a removed model leaves the device and the
        host cache."""
        if self._to_unload is None:
            return
        model, self._to_unload = self._to_unload, None
        engine = self.setup.engine
        if engine.resident == model:
            engine.unload()
        engine.evict(model)
