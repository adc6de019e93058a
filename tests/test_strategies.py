"""Each strategy's decisions on hand-built queues and a fake clock (SPEC section 4).

Profiles (tests/profile_fixtures.py): a loads in 10 s and unloads in 2 s, b loads in 20 s and
unloads in 3 s; both take P(1) = 2 s, P(2) = 2.333 s, P(4) = 3 s, P(8) = 8 s, so B = 4.
SLA 60 s, margin 1 s.
"""

from __future__ import annotations

import pytest

from sincere.scheduling.strategies import STRATEGIES, make_strategy, strategy_slug
from sincere.scheduling.view import Decision, QueueState, SchedulerView
from tests.profile_fixtures import two_models

PROFILES = two_models()
SLA_S = 60.0


def view(now: float, queues: dict[str, tuple], resident: str | None = None,
         draining: bool = False) -> SchedulerView:
    """``queues``: model -> (length, head arrival in s[, arrival rate in req/s[, arrivals of
    the others, all at the head's time when not given]])."""
    states = {}
    for model, spec in queues.items():
        length, head_arrival_s, *rest = spec
        rate = rest[0] if rest else 0.0
        arrivals_s = [head_arrival_s, *(rest[1] if len(rest) > 1 else
                                        [head_arrival_s] * (length - 1))][:length]
        states[model] = QueueState(length, head_arrival_s, head_arrival_s + SLA_S, rate,
                                   [a + SLA_S for a in arrivals_s])
    return SchedulerView(now, states, resident, PROFILES, SLA_S, 50, draining)


def run(model: str, size: int, reason: str) -> Decision:
    return Decision(model=model, size=size, reason=reason)


CASES = [
    # BestBatch waits for B = 4 however late it gets, and never sends a partial batch...
    ("BestBatch", view(500.0, {"a": (3, 0.0)}), Decision(wake_at=None)),
    ("BestBatch", view(5.0, {"a": (4, 0.0)}), run("a", 4, "full")),
    ("BestBatch", view(5.0, {"a": (9, 0.0)}), run("a", 4, "full")),
    # ...until the drain, which serves whatever is queued.
    ("BestBatch", view(5.0, {"a": (3, 0.0)}, draining=True), run("a", 3, "drain")),
    # Timer: nothing resident, 2 queued: fires at 60 - 10 (load a) - 2.333 (P(2)) - 1 = 46.667.
    ("BestBatch+Timer", view(46.6, {"a": (2, 0.0)}), Decision(wake_at=60 - 10 - 7 / 3 - 1)),
    ("BestBatch+Timer", view(60 - 10 - 7 / 3 - 1, {"a": (2, 0.0)}), run("a", 2, "timer")),
    # a resident: no swap cost, fires at 60 - 2.333 - 1.
    ("BestBatch+Timer", view(50.0, {"a": (2, 0.0)}, resident="a"),
     Decision(wake_at=60 - 7 / 3 - 1)),
    # b resident: swap = unload b (3) + load a (10), fires at 60 - 13 - 2.333 - 1.
    ("BestBatch+Timer", view(40.0, {"a": (2, 0.0)}, resident="b"),
     Decision(wake_at=60 - 13 - 7 / 3 - 1)),
    # A full batch leaves at once.
    ("BestBatch+Timer", view(1.0, {"a": (4, 0.0)}), run("a", 4, "full")),
    # EDF: b's oldest request is older, so b goes first although a is resident.
    ("BestBatch+Timer", view(30.0, {"a": (4, 10.0), "b": (4, 5.0)}, resident="a"),
     run("b", 4, "full")),
    # Equal deadlines: the resident model wins, whichever it is.
    ("BestBatch+Timer", view(30.0, {"a": (4, 5.0), "b": (4, 5.0)}, resident="b"),
     run("b", 4, "full")),
    ("BestBatch+Timer", view(30.0, {"a": (4, 5.0), "b": (4, 5.0)}, resident="a"),
     run("a", 4, "full")),
    # The earliest timer is the one to wake for.
    ("BestBatch+Timer", view(0.0, {"a": (1, 0.0), "b": (1, 0.0)}),
     Decision(wake_at=60 - 20 - 2 - 1)),
    # SelectBatch: a resident, rate 1 req/s fills B = 4 in time -> waits (timer at 60-2.333-1).
    ("SelectBatch+Timer", view(5.0, {"a": (2, 0.0, 1.0)}, resident="a"),
     Decision(wake_at=60 - 7 / 3 - 1)),
    # rate 0.05: 4 <= 0.05 * (60 - 3 - 1) fails, 2 <= 0.05 * (60 - 2.333 - 1) holds -> target 2.
    ("SelectBatch+Timer", view(5.0, {"a": (2, 0.0, 0.05)}, resident="a"), run("a", 2, "full")),
    # rate 0.01: not even 1 fits -> target 1, the request leaves at once.
    ("SelectBatch+Timer", view(5.0, {"a": (1, 0.0, 0.01)}, resident="a"), run("a", 1, "full")),
    # The target says when the batch may leave; then it takes what is queued up to B = 4, so
    # a backlog leaves in best batches, not in target-sized pieces.
    ("SelectBatch+Timer", view(5.0, {"a": (7, 0.0, 0.05)}, resident="a"), run("a", 4, "full")),
    ("SelectBatch+Timer", view(5.0, {"a": (3, 0.0, 0.05)}, resident="a"), run("a", 3, "full")),
    # PartialBatch: b is due (deadline 60) and needs a swap from a (unload a 2 s + load b 20 s)
    # plus P(4) = 3 s, so it must start by 60 - 22 - 3 - 1 = 34. At 10 s, a's 2 queued requests
    # (P = 2.333 s) fit before that: they leave first as a partial batch.
    ("BestBatch+PartialBatch+Timer", view(10.0, {"a": (2, 30.0), "b": (4, 0.0)}, resident="a"),
     run("a", 2, "partial")),
    ("BestBatch+PartialBatch+Timer", view(31.6, {"a": (2, 30.0), "b": (4, 0.0)}, resident="a"),
     run("a", 2, "partial")),
    # At 31.7 s the partial batch would end at 34.033 > 34: b goes now.
    ("BestBatch+PartialBatch+Timer", view(31.7, {"a": (2, 30.0), "b": (4, 0.0)}, resident="a"),
     run("b", 4, "full")),
    # Without PartialBatch, b goes at 10 s.
    ("BestBatch+Timer", view(10.0, {"a": (2, 30.0), "b": (4, 0.0)}, resident="a"),
     run("b", 4, "full")),
    # Nothing queued for the resident model: no partial batch.
    ("BestBatch+PartialBatch+Timer", view(10.0, {"a": (0, 0.0), "b": (4, 0.0)}, resident="a"),
     run("b", 4, "full")),
    # Immediate takes what is there, up to B.
    ("Immediate", view(0.0, {"a": (1, 0.0)}), run("a", 1, "immediate")),
    ("Immediate", view(0.0, {"a": (9, 0.0)}), run("a", 4, "immediate")),
    # Dynamic+Delay: the oldest arrived at 5 s and may wait 1 s.
    ("Dynamic+Delay", view(5.5, {"a": (2, 5.0)}), Decision(wake_at=6.0)),
    ("Dynamic+Delay", view(6.0, {"a": (2, 5.0)}), run("a", 2, "timer")),
    ("Dynamic+Delay", view(5.5, {"a": (4, 5.0)}), run("a", 4, "full")),
    # Empty queues: wait for the next arrival, whatever the strategy.
    *[(name, view(0.0, {"a": (0, 0.0)}), Decision(wake_at=None)) for name in STRATEGIES],
]


@pytest.mark.parametrize(("name", "snapshot", "expected"), CASES)
def test_decision(name: str, snapshot: SchedulerView, expected: Decision) -> None:
    decision = make_strategy(name, margin_s=1.0, max_queue_delay_s=1.0).decide(snapshot)
    assert decision.model == expected.model
    assert decision.size == expected.size
    assert decision.reason == expected.reason
    assert decision.wake_at == pytest.approx(expected.wake_at)


def test_timer_fires_exactly_at_its_time_not_before() -> None:
    fire_s = 60 - 10 - 7 / 3 - 1
    strategy = make_strategy("BestBatch+Timer", margin_s=1.0)
    before = strategy.decide(view(fire_s - 1e-9, {"a": (2, 0.0)}))
    at = strategy.decide(view(fire_s, {"a": (2, 0.0)}))
    assert not before.runs and before.wake_at == pytest.approx(fire_s)
    assert (at.model, at.size, at.reason) == ("a", 2, "timer")


def test_batch_never_exceeds_the_largest_profiled_batch() -> None:
    # Immediate with B = 4 and a large queue; draining with a queue of 100 -> at most B.
    for name in STRATEGIES:
        decision = make_strategy(name).decide(view(0.0, {"a": (100, 0.0)}, draining=True))
        assert decision.size == 4, name


def test_registry_names_and_options() -> None:
    assert set(STRATEGIES) == {"BestBatch", "BestBatch+Timer", "SelectBatch+Timer",
                               "BestBatch+PartialBatch+Timer", "Immediate", "Dynamic+Delay",
                               "MaxGoodput"}
    assert make_strategy("Dynamic+Delay", max_queue_delay_s=2.5, margin_s=0.5).params() == {
        "margin_s": 0.5, "shed_late": False, "max_queue_delay_s": 2.5}
    # Options of other strategies are accepted and ignored; unknown names are not.
    assert make_strategy("BestBatch", rate_window_s=30.0).params() == {"margin_s": 1.0,
                                                                       "shed_late": False}
    # Shedding is an option of every strategy, and always on for MaxGoodput.
    assert make_strategy("Immediate", shed_late=True).shed_late
    assert make_strategy("MaxGoodput", shed_late=False).shed_late
    with pytest.raises(TypeError, match="margn_s"):
        make_strategy("BestBatch", margn_s=1.0)
    with pytest.raises(ValueError, match="known: BestBatch"):
        make_strategy("Bestbatch")
    assert strategy_slug("BestBatch+PartialBatch+Timer") == "bestbatch-partialbatch-timer"
