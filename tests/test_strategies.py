"""Each strategy's decisions on hand-built queues and a fake clock (SPEC section 4).

Profiles (tests/profile_fixtures.py): a loads in 10 s and unloads in 2 s, b loads in 20 s and
unloads in 3 s; both take P(1) = 2 s, P(2) = 2.333 s, P(4) = 3 s, P(8) = 8 s, so B = 4.
SLA 60 s, margin 1 s.
"""

from __future__ import annotations

import pytest

from sincere.profiles.profile_set import ProfileError, ProfileSet
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


# --- MaxGoodput, worked by hand (docs/strategies.md#maxgoodput) -----------------------------
# Its rule: shed what is hopeless (d < now + swap + P(1)); wait unless a queue holds B = 4, a
# timer is due (now >= d_head - swap - P(n) - 1) or the traffic has ended; then play each plan
# "m's batch first, then one batch of each other queued model by deadline" forward and take the
# one that meets the most deadlines, then the shortest, then the resident model, then the name.
# A request that ends exactly at its deadline meets it. Swaps: a->b = 2 + 20 = 22 s,
# b->a = 3 + 10 = 13 s; from nothing, a 10 s and b 20 s.

MAX_GOODPUT_CASES = [
    # Keep the resident model while its batch is full. a resident, 4 queued (deadline 70); b 4
    # queued (deadline 60), older. a first: ends 20 + 3 = 23, then b 23 + 22 + 3 = 48: 8 met,
    # over at 48. b first: 20 + 22 + 3 = 45, then a 45 + 13 + 3 = 61: 8 met, over at 61. Equal
    # counts, a's plan is shorter (one swap): a goes, although EDF (the timers) would send b.
    ("keeps the resident while full",
     view(20.0, {"a": (4, 10.0), "b": (4, 0.0)}, resident="a"), run("a", 4, "full")),
    # Swap when it saves more than it costs. Same queues at 34 s, a's deadline now 90: a first
    # ends 37, then b at 37 + 25 = 62 > 60, b's 4 lost (4 met). b first ends 34 + 25 = 59 <= 60,
    # then a at 59 + 16 = 75 <= 90 (8 met): the swap saves 4 and costs nothing.
    ("swaps when the swap saves requests",
     view(34.0, {"a": (4, 30.0), "b": (4, 0.0)}, resident="a"), run("b", 4, "full")),
    # ...and not when it costs more. b's one request is due (fire 60 - 22 - 2 - 1 = 35 <= 36).
    # a first: 39 (4 met, deadline 70), then b at 39 + 24 = 63 > 60 (lost): 4 met. b first:
    # 36 + 24 = 60, exactly its deadline (met), then a at 60 + 16 = 76 > 70: 1 met. a stays.
    ("does not swap to save fewer than it loses",
     view(36.0, {"a": (4, 10.0), "b": (1, 0.0)}, resident="a"), run("a", 4, "full")),
    # Wait while waiting can only help: nothing full, no timer due. From nothing loaded, a's
    # timer (2 queued) fires at 60 - 10 - 2.333 - 1 = 46.667, b's (1) at 60 - 20 - 2 - 1 = 37.
    ("waits for the earliest timer",
     view(5.0, {"a": (2, 0.0), "b": (1, 0.0)}), Decision(wake_at=37.0)),
    # At 37 s b's timer is due; the plans still choose: a first ends 37 + 10 + 2.333 = 49.333
    # (2 met), then b at 49.333 + 2 + 20 + 2 = 73.333 > 60; b first ends 59 (1 met), then a at
    # 59 + 3 + 10 + 2.333 = 74.333 > 60. a's batch leaves, on b's timer.
    ("a due timer sends the best plan's batch",
     view(37.0, {"a": (2, 0.0), "b": (1, 0.0)}), run("a", 2, "timer")),
    # The drain sends without waiting; a resident: a first ends 2 then b at 2 + 24 = 26, b
    # first 24 then a at 24 + 15 = 39; both meet 2, a's is shorter.
    ("the drain serves the shorter plan first",
     view(0.0, {"a": (1, 0.0), "b": (1, 0.0)}, resident="a", draining=True),
     run("a", 1, "drain")),
    ("the drain sends best batches, not the whole queue",
     view(0.0, {"a": (9, 0.0)}, draining=True), run("a", 4, "drain")),
    ("an empty queue waits for the next arrival", view(0.0, {"a": (0, 0.0)}), Decision()),
]


@pytest.mark.parametrize(("snapshot", "expected"), [c[1:] for c in MAX_GOODPUT_CASES],
                         ids=[c[0] for c in MAX_GOODPUT_CASES])
def test_max_goodput_decision(snapshot: SchedulerView, expected: Decision) -> None:
    decision = make_strategy("MaxGoodput", margin_s=1.0).decide(snapshot)
    assert (decision.model, decision.size, decision.reason, decision.shed) == (
        expected.model, expected.size, expected.reason, expected.shed)
    assert decision.wake_at == pytest.approx(expected.wake_at)


@pytest.mark.parametrize(("snapshot", "shed", "then"), [
    # a resident at 59 s: a request is hopeless when d < 59 + 0 + P(1) = 61. The two of
    # deadline 60 go; the third (75) is left alone, not full, and its timer fires at
    # 75 - 2 - 1 = 72 (before it turns hopeless at 75 - 2 = 73).
    (view(59.0, {"a": (3, 0.0, 0.0, [0.0, 15.0])}, resident="a"), (("a", 2),),
     Decision(wake_at=72.0)),
    # The swap counts: b is not resident, so hopeless when d < 40 + 22 + 2 = 64: deadline 60 is
    # shed, 70 is not; its timer fires at 70 - 22 - 2 - 1 = 45.
    (view(40.0, {"a": (0, 0.0), "b": (2, 0.0, 0.0, [10.0])}, resident="a"), (("b", 1),),
     Decision(wake_at=45.0)),
    # Shed and send at once: the two hopeless go, the four left (deadline 75) are a full batch.
    (view(59.0, {"a": (6, 0.0, 0.0, [0.0, 15.0, 15.0, 15.0, 15.0])}, resident="a"),
     (("a", 2),), run("a", 4, "full")),
    # Exactly on the edge: at 36 s, b's deadline 60 = 36 + 22 + 2 is not hopeless (not late).
    (view(36.0, {"a": (4, 10.0), "b": (1, 0.0)}, resident="a"), (), run("a", 4, "full")),
])
def test_max_goodput_sheds_what_can_no_longer_meet_its_sla(snapshot: SchedulerView,
                                                          shed: tuple, then: Decision) -> None:
    decision = make_strategy("MaxGoodput", margin_s=1.0).decide(snapshot)
    assert decision.shed == shed
    assert (decision.model, decision.size, decision.reason) == (then.model, then.size,
                                                                then.reason)
    assert decision.wake_at == pytest.approx(then.wake_at)


def test_max_goodput_ties_go_to_the_resident_then_the_name() -> None:
    """Two models with the same profile, 4 queued each, the same deadlines. Nothing loaded:
    either plan is load 10 + P(4) 3, swap 12 + 3 = 28 s, 8 met: a full tie, the name decides.
    With c resident, c first is 3 + 15 = 18 s against a first's 15 + 15 = 30 s: c."""
    from tests.profile_fixtures import model

    twins = ProfileSet({"a": model("a", 10.0, 2.0), "c": model("c", 10.0, 2.0)}, "test", "off",
                       "loading.csv", "batch.csv")
    queues = {m: QueueState(4, 0.0, SLA_S, 0.0, [SLA_S] * 4) for m in ("a", "c")}
    strategy = make_strategy("MaxGoodput", margin_s=1.0)
    for resident, chosen in ((None, "a"), ("c", "c"), ("a", "a")):
        snapshot = SchedulerView(5.0, queues, resident, twins, SLA_S, 50)
        assert strategy.decide(snapshot).model == chosen, resident


def test_max_goodput_names_a_model_without_a_profile() -> None:
    """A queue for a model the profiles lack cannot be planned: the error names it (the server
    refuses such a model before it is queued, with 422 "no profile")."""
    with pytest.raises(ProfileError, match="no profile for model 'z'"):
        make_strategy("MaxGoodput").decide(view(5.0, {"a": (4, 0.0), "z": (1, 0.0)}))
