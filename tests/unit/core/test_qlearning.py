"""Q-table, TD update, epsilon-greedy selection, propensities and the epsilon schedule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rl_worker.core.qlearning import DecisionRandom, EpsilonSchedule, QTable
from tests.unit.core.reference import as_mask, compute_propensities, numpy_generator, select_action, td_update

ALL4 = np.arange(4, dtype=np.intp)


def table_with(rows: dict[str, list[float]]) -> QTable:
    table = QTable(4)
    for key, values in rows.items():
        for action, value in enumerate(values):
            table.set_value(key, action, value)
    return table


class TestTdUpdate:
    def test_non_terminal_bootstraps_from_the_masked_max(self) -> None:
        table = table_with({"s": [0.5, 0.2, 0.0, 0.0], "s'": [1.0, 3.0, 2.0, -1.0]})
        # 3.0 at action 1 is masked in s': max over {0, 2} = 2.0
        # target = 0.5 + 0.9 * 2.0 = 2.3; error = 2.3 - 0.2 = 2.1; Q = 0.2 + 0.1 * 2.1 = 0.41
        error = td_update(table, "s", 1, 0.5, "s'", np.array([0, 2]), alpha=0.1, gamma=0.9)
        assert error == pytest.approx(2.1, rel=1e-12)
        assert table.row("s")[1] == pytest.approx(0.41, rel=1e-12)  # type: ignore[index]
        assert table.row("s").tolist()[0] == 0.5  # type: ignore[union-attr]
        assert table.visits[table.row_index("s")].tolist() == [0, 1, 0, 0]  # type: ignore[index]
        assert table.row("s'").tolist() == [1.0, 3.0, 2.0, -1.0]  # type: ignore[union-attr]

    def test_unmasked_max_differs(self) -> None:
        table = table_with({"s": [0.5, 0.2, 0.0, 0.0], "s'": [1.0, 3.0, 2.0, -1.0]})
        # target = 0.5 + 0.9 * 3.0 = 3.2; error 3.0
        assert td_update(table, "s", 1, 0.5, "s'", ALL4, alpha=0.1, gamma=0.9) == pytest.approx(3.0)

    def test_terminal_has_no_bootstrap(self) -> None:
        table = table_with({"s": [0.5, 0.2, 0.0, 0.0], "s'": [1.0, 3.0, 2.0, -1.0]})
        # target = 0.5; error = 0.3; Q = 0.2 + 0.1 * 0.3 = 0.23
        error = td_update(table, "s", 1, 0.5, None, ALL4, alpha=0.1, gamma=0.9)
        assert error == pytest.approx(0.3, rel=1e-12)
        assert table.row("s")[1] == pytest.approx(0.23, rel=1e-12)  # type: ignore[index]

    def test_unseen_next_state_counts_as_zero_and_is_not_created(self) -> None:
        table = table_with({"s": [0.0, 0.0, -0.4, 0.0]})
        # target = -1.0 + 0.99 * 0; error = -1.0 - (-0.4) = -0.6; Q = -0.4 + 0.5 * -0.6 = -0.7
        error = td_update(table, "s", 2, -1.0, "never", ALL4, alpha=0.5, gamma=0.99)
        assert error == pytest.approx(-0.6, rel=1e-12)
        assert table.row("s")[2] == pytest.approx(-0.7, rel=1e-12)  # type: ignore[index]
        assert table.row("never") is None
        assert len(table) == 1

    def test_unseen_state_starts_at_zero(self) -> None:
        table = QTable(4)
        # target = 2.0 + 0.5 * 0 (the next state is the new state itself, all zeros)
        assert td_update(table, "new", 3, 2.0, "new", ALL4, alpha=0.25, gamma=0.5) == 2.0
        assert table.row("new").tolist() == [0.0, 0.0, 0.0, 0.5]  # type: ignore[union-attr]
        assert table.keys == ["new"]

    def test_self_loop_reads_the_value_before_the_update(self) -> None:
        table = table_with({"s": [1.0, 0.0, 0.0, 0.0]})
        # target = 0 + 1.0 * max(1, 0, 0, 0) = 1.0; error = 1.0 - 1.0 = 0
        assert td_update(table, "s", 0, 0.0, "s", ALL4, alpha=0.5, gamma=1.0) == 0.0
        assert table.row("s")[0] == 1.0  # type: ignore[index]

    def test_table_grows_and_keeps_its_rows(self) -> None:
        table = QTable(3, capacity=2)
        for k in range(5):
            td_update(table, f"s{k}", k % 3, float(k + 1), None, np.arange(3), alpha=1.0, gamma=0.9)
        assert table.keys == [f"s{k}" for k in range(5)]
        assert table.q_values.shape[0] >= 5
        q_values, visits = table.used()
        assert q_values.tolist() == [
            [1.0, 0.0, 0.0],
            [0.0, 2.0, 0.0],
            [0.0, 0.0, 3.0],
            [4.0, 0.0, 0.0],
            [0.0, 5.0, 0.0],
        ]
        assert visits.sum() == 5
        assert table.max_value("s4", as_mask([0, 2])) == 0.0
        assert table.max_value("s4", as_mask(np.arange(3))) == 5.0

    def test_from_arrays(self) -> None:
        table = QTable.from_arrays(["a", "b"], np.array([[1.0, 2.0], [3.0, 4.0]]), np.ones((2, 2), np.int64))
        assert table.row("b").tolist() == [3.0, 4.0]  # type: ignore[union-attr]
        assert table.row_index("a") == 0
        assert len(table) == 2


class TestPropensities:
    def test_by_hand(self) -> None:
        # greedy set {1, 2}: 0.2 / 4 + 0.8 / 2 = 0.45; others 0.2 / 4 = 0.05
        probs = compute_propensities(np.array([1.0, 5.0, 5.0, 2.0]), ALL4, 0.2, 4)
        assert probs.tolist() == pytest.approx([0.05, 0.45, 0.45, 0.05], rel=1e-12)

    def test_masked_greedy_action_is_ignored(self) -> None:
        # 5.0 at actions 1, 2 is masked; greedy within {0, 3} is 3: 0.1 + 0.8, and 0.1
        probs = compute_propensities(np.array([1.0, 5.0, 5.0, 2.0]), np.array([0, 3]), 0.2, 4)
        assert probs.tolist() == pytest.approx([0.1, 0.0, 0.0, 0.9], rel=1e-12)

    def test_unseen_state_is_uniform_over_the_mask(self) -> None:
        probs = compute_propensities(None, np.array([1, 2, 3]), 0.3, 5)
        assert probs.tolist() == pytest.approx([0.0, 1 / 3, 1 / 3, 1 / 3, 0.0], rel=1e-12)


def _q_rows(n: int) -> st.SearchStrategy[np.ndarray]:
    # A few distinct values so that greedy ties are common, plus arbitrary floats.
    values = st.one_of(st.sampled_from([-1.0, 0.0, 0.5, 2.0]), st.floats(-1e6, 1e6))
    return st.lists(values, min_size=n, max_size=n).map(lambda v: np.array(v, dtype=np.float64))


@st.composite
def selection_cases(draw: st.DrawFn) -> tuple[np.ndarray | None, np.ndarray, float, int, int]:
    n_actions = draw(st.sampled_from([2, 5, 40, 60]))
    q_row = draw(st.none() | _q_rows(n_actions))
    allowed = draw(st.sets(st.integers(0, n_actions - 1), min_size=1))
    mask = np.array(sorted(allowed), dtype=np.intp)
    epsilon = draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0))
    seed = draw(st.integers(0, 2**63))
    return q_row, mask, epsilon, n_actions, seed


@given(selection_cases())
def test_selection_and_propensities_agree(
    case: tuple[np.ndarray | None, np.ndarray, float, int, int],
) -> None:
    q_row, mask, epsilon, n_actions, seed = case
    probs = compute_propensities(q_row, mask, epsilon, n_actions)
    assert probs.sum() == pytest.approx(1.0, abs=1e-12)
    masked = np.setdiff1d(np.arange(n_actions), mask)
    assert (probs[masked] == 0.0).all()
    assert (probs >= 0.0).all()
    selection = select_action(q_row, mask, epsilon, np.random.default_rng(seed))
    assert selection.action in mask
    assert selection.propensity > 0.0
    assert selection.propensity == probs[selection.action]
    if epsilon == 0.0:
        assert not selection.explored
    if not selection.explored and q_row is not None:
        assert q_row[selection.action] == q_row[mask].max()


def test_selection_frequencies_match_propensities() -> None:
    q_row = np.array([0.0, 2.0, 2.0, 1.0, 3.0, -1.0])
    mask = np.array([0, 1, 2, 3, 5])  # the best action, 4, is masked
    probs = compute_propensities(q_row, mask, 0.3, 6)
    rng = np.random.Generator(np.random.PCG64(1234))
    n = 20_000
    counts = np.bincount([select_action(q_row, mask, 0.3, rng).action for _ in range(n)], minlength=6)
    assert counts[4] == 0
    stderr = np.sqrt(probs * (1 - probs) / n)
    assert np.all(np.abs(counts / n - probs) <= 5 * stderr + 1e-9)


class TestEpsilonSchedule:
    def test_decay_and_floor(self) -> None:
        schedule = EpsilonSchedule(start=0.1, minimum=0.01, decay=0.5)
        assert [schedule(n) for n in range(5)] == pytest.approx([0.1, 0.05, 0.025, 0.0125, 0.01])
        assert schedule(10_000) == 0.01
        assert "0.5^n" in repr(schedule)

    def test_defaults_reach_the_floor(self) -> None:
        schedule = EpsilonSchedule(start=0.1, minimum=0.01, decay=0.9997)
        assert schedule(1000) == pytest.approx(0.1 * 0.9997**1000)
        assert schedule(7_675) == 0.01  # 0.1 * 0.9997^n falls below 0.01 near n = 7,674

    def test_no_decay(self) -> None:
        assert EpsilonSchedule(start=0.2, minimum=0.0, decay=1.0)(123) == 0.2


class TestDecisionRandom:
    def test_same_seed_and_id_redraw_the_same_numbers(self) -> None:
        first = DecisionRandom(5)
        a = numpy_generator(first, "decision-1").random(4).tolist()
        numpy_generator(first, "something else").random(4)
        again = numpy_generator(first, "decision-1").random(4).tolist()
        other_instance = numpy_generator(DecisionRandom(5), "decision-1").random(4).tolist()
        assert a == again == other_instance

    def test_seed_and_id_both_matter(self) -> None:
        draws = {
            tuple(numpy_generator(DecisionRandom(seed), decision_id).random(2).tolist())
            for seed, decision_id in [(5, "a"), (6, "a"), (5, "b"), (56, ""), (5, "6:")]
        }
        assert len(draws) == 5

    @pytest.mark.parametrize(
        ("seed", "decision_id", "draws"),
        [
            (0, "a", [0.4101192345410758, 0.6388061537644124, 0.5718623187582453]),
            (7, "decision-1", [0.3749464935824487, 0.21620722260520853, 0.36887824127426705]),
            (2**40, "ünïcode", [0.8605405307597526, 0.18580770058110496, 0.41770561887502367]),
        ],
    )
    def test_stream_is_pinned(self, seed: int, decision_id: str, draws: list[float]) -> None:
        # The stream is part of what a logged decision means: replaying an old log with a
        # new version must redraw the same numbers, so any change here is a breaking change.
        assert numpy_generator(DecisionRandom(seed), decision_id).random(3).tolist() == draws
        stream = DecisionRandom(seed).stream(decision_id)
        assert [stream.random() for _ in range(3)] == draws

    def test_draws_look_uniform(self) -> None:
        randoms = DecisionRandom(0)
        firsts = np.array([numpy_generator(randoms, f"d{i}").random() for i in range(4000)])
        assert 0.47 < firsts.mean() < 0.53
        assert np.histogram(firsts, bins=4, range=(0, 1))[0].min() > 900


class TestTableCaches:
    def test_arrays_are_read_only(self) -> None:
        table = table_with({"s": [1.0, 2.0, 3.0, 4.0]})
        with pytest.raises(ValueError, match="read-only"):
            table.q_values[0, 0] = 5.0
        with pytest.raises(ValueError, match="read-only"):
            table.visits[0, 0] = 5
        assert table.row("s").tolist() == [1.0, 2.0, 3.0, 4.0]  # type: ignore[union-attr]

    @given(
        operations=st.lists(
            st.tuples(
                st.sampled_from(["a", "b", "c"]),  # state
                st.integers(0, 5),  # action
                st.sampled_from([-1.0, 0.0, 0.5, 2.0]) | st.floats(-3.0, 3.0),  # value or reward
                st.booleans(),  # set_value or td_update
                st.sampled_from(["a", "b", "c", "unseen", None]),  # next state
            ),
            max_size=60,
        )
    )
    def test_greedy_sets_and_maxima_stay_exact(
        self, operations: list[tuple[str, int, float, bool, str | None]]
    ) -> None:
        # The cached greedy sets are updated incrementally on every write; after any sequence
        # of writes they must equal a fresh scan of the row, for every mask.
        masks = [as_mask(m) for m in ([0, 1, 2, 3, 4, 5], [0, 2, 4], [5], [1, 2])]
        table = QTable(6, capacity=2)
        for state, action, value, direct, next_state in operations:
            if direct:
                table.set_value(state, action, value)
            else:
                td_update(table, state, action, value, next_state, masks[action % 4], alpha=0.5, gamma=0.9)
            for key in ("a", "b", "c"):
                for mask in masks:
                    row = table.row(key)
                    if row is None:
                        assert table.greedy_actions(key, mask) is None
                        assert table.max_value(key, mask) == 0.0
                        continue
                    values = row[mask.indices]
                    assert table.max_value(key, mask) == values.max()
                    assert table.greedy_actions(key, mask) == tuple(mask.indices[values == values.max()].tolist())

    def test_unsorted_masks_are_refused(self) -> None:
        with pytest.raises(ValueError, match="ascending"):
            select_action(None, np.array([3, 1]), 0.1, np.random.default_rng(0))


class TestDecisionStream:
    @given(seed=st.integers(0, 2**64), decision_id=st.text(max_size=30), n=st.integers(1, 8))
    def test_same_draws_as_numpy_pcg64(self, seed: int, decision_id: str, n: int) -> None:
        randoms = DecisionRandom(seed)
        stream = randoms.stream(decision_id)
        assert [stream.random() for _ in range(n)] == numpy_generator(randoms, decision_id).random(n).tolist()

    def test_streams_are_independent_objects(self) -> None:
        randoms = DecisionRandom(3)
        first, second = randoms.stream("x"), randoms.stream("x")
        assert first.random() == second.random()
        assert first.random() != randoms.stream("x").random()
