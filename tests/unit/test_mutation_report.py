"""``make mutation``'s report: the accepted survivors it leaves out of a score come from docs/testing.md's tables."""

from __future__ import annotations

import tomllib

from devstack import mutation


def test_every_accepted_survivor_row_names_a_mutant_of_a_mutated_module_and_its_change():
    settings = tomllib.loads(mutation.LINKS["pyproject.toml"].read_text())["tool"]["mutmut"]
    modules = {path.removesuffix(".py").replace("/", ".") for path in settings["only_mutate"]}
    accepted = mutation.accepted()
    assert len(accepted) >= 20  # the tables are read, not skipped by a changed layout
    for name, change in accepted.items():
        assert name.split(".x")[0] in modules, name
        assert "__mutmut_" in name and change.strip(), name


def test_a_score_of_thirty_out_of_thirty_is_reported_with_an_honest_interval():
    low, high = mutation.wilson(30, 30)
    assert (round(low, 3), high) == (0.886, 1.0)  # not "100 %": thirty mutants bound the module's score
    low, high = mutation.wilson(25, 30)
    assert 0.66 < low < 0.70 and 0.92 < high < 0.94
