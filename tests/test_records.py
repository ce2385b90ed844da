"""studies.records: the seeds of a study's record and of its sweep on disk add
up, the disk's replacing the record's, and nothing made with other settings
than the study's today gets in."""
from studies import records

SETTINGS = {"training": {"train_steps": 50000, "learning_rate": 0.0012}, "lottery": {"rounds": 20}}


def record(seeds, wall=3600.0, code="aaaa", settings=SETTINGS):
    runs = {str(seed): dict(rows=[["0", "ticket", f"0.{seed}{code}"]], histories={}) for seed in seeds}
    return dict(columns=["round", "branch", "test_accuracy"], settings=settings, runs=runs,
                sources=[dict(seeds=list(seeds), code=[code], machine="2 CPU cores", finished="2026-12-02",
                              wall_seconds=wall)])


def test_seeds_on_disk_join_the_record_and_replace_its_own():
    said = []
    merged = records.merge(record([0, 1]), record([1, 2], wall=60.0, code="bbbb"), SETTINGS, "lenet", said.append)
    assert list(merged["runs"]) == ["0", "1", "2"] and not said
    assert merged["runs"]["1"] == record([1], code="bbbb")["runs"]["1"]  # the disk's seed 1
    assert merged["runs"]["0"] == record([0])["runs"]["0"]
    # the old sweep keeps seed 0 only: its wall time covered seed 1 too, so it is no longer known
    assert merged["sources"] == [
        dict(seeds=[0], code=["aaaa"], machine="2 CPU cores", finished="2026-12-02", wall_seconds=None),
        dict(seeds=[1, 2], code=["bbbb"], machine="2 CPU cores", finished="2026-12-02", wall_seconds=60.0)]
    loaded = records.loaded(merged)
    assert loaded["seeds"] == [0, 1, 2]
    assert [run["rows"] for run in loaded["runs"]] == [
        [dict(round="0", branch="ticket", test_accuracy=f"0.{seed}{code}", test_history=[])]
        for seed, code in ((0, "aaaa"), (1, "bbbb"), (2, "bbbb"))]


def test_a_record_is_written_as_it_is_read(tmp_path):
    kept = record([0, 1])
    kept["runs"]["0"]["histories"] = {"0/ticket": records.history([dict(step=100, test_accuracy=0.5)])}
    path = str(tmp_path / "records" / "x.json")
    records.write(path, kept)
    assert records.read(path) == kept
    assert '"rows": [\n' in open(path).read() and '["0", "ticket", "0.0aaaa"]' in open(path).read()


def test_a_record_of_other_settings_is_left_out_in_one_line():
    said = []
    other = {"training": {"train_steps": 6000, "learning_rate": 0.0012}, "lottery": {"rounds": 12}}
    merged = records.merge(record([0, 1, 2], settings=other), record([0]), SETTINGS, "lenet", said.append)
    assert list(merged["runs"]) == ["0"]
    assert said == ["studies.results: the record of lenet left out: made with other settings than the study's: "
                    "--train_steps (50000 vs 6000), --rounds (20 vs 12)"]
    assert records.merge(record([0], settings=other), None, SETTINGS, "lenet", said.append) is None


def test_histories_keep_their_steps():
    even = [dict(step=s, test_accuracy=s / 1000) for s in (100, 200, 300)]
    uneven = [dict(step=s, test_accuracy=s / 1000) for s in (100, 200, 250)]
    for entries in (even, uneven, even[:1]):
        stored = records.history(entries)
        assert list(zip(records.steps_of(stored), stored["test_accuracy"])) == [
            (e["step"], e["test_accuracy"]) for e in entries]
    assert records.history(even) == dict(first=100, every=100, test_accuracy=[0.1, 0.2, 0.3])
