"""l2rw.results.weight_shares: the shares of weight mass per class, on a hand-made run."""
import pytest

from l2rw.results.weight_shares import run_shares, shares_by_setting

# class a: 3 images, mass 0.5 x 2 + 0.5 x 2 + 0 x 2 = 2; class b: 1 corrupted image, mass 2 x 1 = 2;
# zero weights in 2 of the 7 example-steps; an example no step saw has no mean weight and is left out
EXAMPLES = """index,class,corrupted,mean_weight,zero_share,steps_seen
0,a,0,0.5,0,2
1,a,0,0.5,0,2
2,a,0,0,1,2
3,b,1,2,0,1
4,b,0,,,0
"""


def write_run(folder, examples: str = EXAMPLES):
    folder.mkdir()
    (folder / "example_weights.csv").write_text(examples)
    return folder


def test_a_runs_shares_of_data_and_of_weight_mass(tmp_path):
    shares = run_shares(write_run(tmp_path / "run"))
    assert shares == pytest.approx({
        "majority_data_share": 0.75, "majority_weight_share": 0.5, "minority_weight_share": 0.5, "zero_share": 2 / 7,
        "corrupted_data_share": 0.25, "corrupted_weight_share": 0.5,
    })


def test_shares_are_averaged_over_the_seeds_of_each_setting_of_the_l2rw_runs(tmp_path):
    clean = EXAMPLES.replace("3,b,1,", "3,b,0,")
    runs = {"l2rw 0": write_run(tmp_path / "l2rw0"), "l2rw 1": write_run(tmp_path / "l2rw1", clean)}
    header = "method,seed,status,accuracy,balanced_accuracy,imbalance,noise_rate,run_dir"
    rows = [f"l2rw,0,ok,0.5,0.5,0.9,0.0,{runs['l2rw 0']}", f"l2rw,1,ok,0.5,0.5,0.9,0.0,{runs['l2rw 1']}",
            f"sgd,0,ok,0.5,0.5,0.9,0.0,{tmp_path / 'missing'}", f"l2rw,2,diverged,,,0.9,0.0,{tmp_path / 'missing'}"]
    results = tmp_path / "results.csv"
    results.write_text("\n".join([header, *rows]) + "\n")
    summary = shares_by_setting([results], ["imbalance", "noise_rate"])
    assert summary.loc[("0.9", "0"), "seeds"] == 2
    assert summary.loc[("0.9", "0"), "majority_weight_share mean"] == 0.5
    assert summary.loc[("0.9", "0"), "corrupted_weight_share mean"] == 0.5  # only the run with a corrupted label has one
