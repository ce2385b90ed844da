"""RESULTS.md's common study section on hand-made runs: the sparsest round's
ticket-minus-control differences tested over seeds, and the sentence that
says when no branch converged."""
from studies import records, results


def runs_of(stops=(400, 400, 400)):
    """Three seeds, rounds 0 (dense) and 1 (20%): the ticket 1, 2, 3 points above reinit at round 1."""
    runs = []
    for seed, dense in enumerate((0.80, 0.81, 0.82)):
        rows = [dict(round="0", branch="ticket", status="ok", weights_remaining_pct="100.0", test_accuracy=str(dense),
                     early_stop_step=str(stops[seed])),
                dict(round="1", branch="ticket", status="ok", weights_remaining_pct="20.0",
                     test_accuracy=str(dense + 0.01), early_stop_step="400"),
                dict(round="1", branch="reinit", status="ok", weights_remaining_pct="20.0",
                     test_accuracy=str(dense + 0.01 - 0.01 * (seed + 1)), early_stop_step="400")]
        runs.append(dict(rows=rows))
    return runs


def test_the_headline_tests_ticket_minus_each_control_at_the_sparsest_round():
    text = results.headline(runs_of())
    # differences 1, 2, 3 points: t = 2 / (1 / sqrt 3) = 3.46 with 2 degrees of freedom, p = 0.074
    assert "Ticket minus reinit: +2.0, 95% CI [-0.5, +4.5], p = 0.074, 3 seeds" in text
    assert text.startswith("Dense: 81.0% test accuracy (mean of 3 seeds).")


def test_a_study_whose_branches_all_stop_at_the_last_step_says_none_converged():
    settings = {"training": {"train_steps": 400}}
    assert "none has converged" in results.unconverged(dict(runs=runs_of(), settings=settings))
    assert results.unconverged(dict(runs=runs_of(stops=(400, 200, 400)), settings=settings)) == ""
    assert results.unconverged(dict(runs=runs_of(), settings={"training": {"train_steps": 800}})) == ""
    failed = runs_of()
    for run in failed:
        for row in run["rows"]:
            row["status"] = "failed"
    assert results.unconverged(dict(runs=failed, settings=settings)) == ""  # nothing finished: nothing to say


def test_one_seed_gives_the_difference_without_a_test():
    text = results.headline(runs_of()[:1])
    assert "Ticket minus reinit: +1.0, 1 seed (points of test accuracy)." in text and "t test" not in text


def test_a_record_read_for_the_report_keeps_its_settings():
    record = dict(columns=["round", "branch"], settings={"training": {"train_steps": 400}}, sources=[],
                  runs={"0": dict(rows=[[0, "ticket"]], histories={})})
    assert records.loaded(record)["settings"] == {"training": {"train_steps": 400}}
