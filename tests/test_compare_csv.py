"""tools/compare_csv.py: what it calls agreement and what it reports."""

from __future__ import annotations

import pandas as pd

from tools.compare_csv import differences

KEY = ["cell_id", "metric"]


def test_a_number_moved_beyond_the_tolerance_is_reported_and_one_within_it_is_not() -> None:
    old = pd.DataFrame({"cell_id": ["a", "a"], "metric": ["x", "y"], "value": [1.0, 2.0]})
    new = old.assign(value=[1.0 + 1e-12, 2.0 + 1e-6])
    assert differences(old, new, KEY, 1e-9, set()) == ["a/y value: 2.0 -> 2.000001"]


def test_tables_with_no_rows_agree() -> None:
    # A results table that holds only its header (nothing paired) is compared too.
    empty = pd.DataFrame({"cell_id": [], "metric": [], "value": []})
    assert differences(empty, empty.copy(), KEY, 1e-9, set()) == []


def test_a_key_that_names_several_rows_is_refused_rather_than_matched_wrongly() -> None:
    # The same run id in two folders: matched by run_id alone, each row would meet both.
    old = pd.DataFrame({"cell_id": ["a", "a"], "metric": ["x", "x"], "value": [1.0, 2.0]})
    found = differences(old, old.copy(), KEY, 1e-9, set())
    assert found[0].startswith("key cell_id+metric names 2 rows of the old table")
    assert len(found) == 2  # both tables named, no row compared
