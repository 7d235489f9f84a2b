"""The paper's tables: every cell parses, workdirs merge only when they share Retrain, the layout."""

import json

import pytest

from mixunlearn_jax import tables
from mixunlearn_jax.evaluation import paper
from mixunlearn_jax.evaluation import report

METRICS = ("Test_r", "Test_f", "ASR")


def results(models, retrain_test_r=98.0, seeds=(0, 1)):
  """results.json of a class-level MNIST workdir: {model: (Test_r, seconds)} plus f_D, Retrain."""
  models = {"initial": (99.0, 50.0), "retrain": (retrain_test_r, 200.0), **models}
  per_seed = {s: {name: {"metrics": {"Test_r": test_r + s, "Test_f": 0.0, "ASR": 25.0},
                         "seconds": seconds, "examples_per_sec": 1.0}
                  for name, (test_r, seconds) in models.items()} for s in seeds}
  out = report.aggregate(per_seed, METRICS)
  out.update(dataset="mnist", setup="class")
  return out


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist", "cifar10", "svhn_cropped"])
@pytest.mark.parametrize("setup", ["class", "data"])
def test_every_paper_table_has_each_row_and_a_whole_retrain_row(dataset, setup):
  rows = paper.table(dataset, setup)
  assert tuple(rows)[:len(paper.ROWS)] == paper.ROWS  # Tables 1/2, then 3/4's legible ablations
  ablations = tuple(rows)[len(paper.ROWS):]
  assert ablations == tuple(r for r in paper.ABLATION_ROWS if r in ablations)
  assert len(ablations) in (0, 4 if setup == "data" else 6)  # Table 3 has α 0.35 and 1.5 too
  assert all(cell is not None and cell[1] >= 0 for cell in rows["retrain"].values())
  assert all(0 <= cell[0] <= 100 for row in rows.values() for cell in row.values() if cell)


@pytest.mark.parametrize("dataset", ["cifar10", "svhn_cropped"])
def test_noisy_and_semi_tables_hold_their_methods_only_and_are_whole(dataset):
  noisy, semi = paper.table(dataset, "noisy"), paper.table(dataset, "semi")
  assert tuple(noisy) == ("retrain", "neggrad", "sisa", "laf_r", "mixunlearn_aware")
  assert tuple(semi) == ("retrain", "laf", "lmix", "mixunlearn_agnostic")
  assert all(cell is not None for t in (noisy, semi) for row in t.values() for cell in row.values())
  assert paper.table("mnist", "semi") == {}  # the paper's semi setup: CIFAR-10 and SVHN only


def test_workdirs_merge_only_when_they_share_f_d_and_retrain():
  first = results({"mixunlearn_aware": (97.0, 20.0)})
  second = results({"neggrad": (96.0, 40.0)})
  merged = paper.merge([first, second])
  assert set(merged["models"]) == {"initial", "retrain", "mixunlearn_aware", "neggrad"}
  with pytest.raises(ValueError, match="different retrain"):
    paper.merge([first, results({"neggrad": (96.0, 40.0)}, retrain_test_r=97.5)])
  with pytest.raises(ValueError, match="two workdirs"):
    paper.merge([first, results({"mixunlearn_aware": (97.0, 20.0)})])
  with pytest.raises(ValueError, match=r"seeds: \[0, 1\] and \[2\].*--seeds=0,1,2$"):
    paper.merge([first, results({"neggrad": (96.0, 40.0)}, seeds=(2,))])
  laf_column = results({"neggrad": (96.0, 40.0)})
  laf_column["metrics"] = [*laf_column["metrics"], "ASR_laf"]
  with pytest.raises(ValueError, match="differ in metrics"):
    paper.merge([first, laf_column])


def test_layout_groups_methods_as_the_paper_and_adds_cost(tmp_path):
  workdirs = []
  for i, models in enumerate([{"mixunlearn_agnostic": (97.5, 30.0), "neggrad": (96.0, 40.0)},
                              {"mixunlearn_aware": (97.0, 20.0)}]):
    workdirs.append(tmp_path / f"w{i}")
    workdirs[-1].mkdir()
    (workdirs[-1] / "results.json").write_text(json.dumps(results(models)))
  lines = [l for l in tables.beside_paper(workdirs).splitlines() if l.startswith("| ")][1:]
  names = [l.split(" | ")[1] for l in lines]
  assert names == ["f_D", "retrain", "neggrad", "mixunlearn_aware", "mixunlearn_agnostic"]
  cells = {n: l.strip("| ").split(" | ") for n, l in zip(names, lines)}
  assert cells["neggrad"][0] == "aware" and cells["mixunlearn_agnostic"][0] == "agnostic"
  # Test_r: seeds 0 and 1 add 0 and 1 to the value; the paper's NegGrad mean is 98.89.
  assert cells["neggrad"][2] == "96.50 ± 0.50 (98.89)"
  assert cells["neggrad"][5] == f"{abs(96.5 - 98.5) / 3:.2f}"  # mean gap over 3 metrics
  assert cells["mixunlearn_aware"][-2:] == ["20", f"{20 / 200:.2f}"]
  with pytest.raises(FileNotFoundError, match="results.json"):
    tables.beside_paper([tmp_path])


def test_ablations_come_after_their_group_beside_the_paper_s_table_3(tmp_path):
  (tmp_path / "results.json").write_text(json.dumps(results(
      {"mixunlearn_agnostic_no_real": (67.0, 30.0), "mixunlearn_agnostic": (98.0, 30.0),
       "mixunlearn_agnostic_vanilla_mixup": (99.0, 30.0), "neggrad": (96.0, 40.0)})))
  lines = [l for l in tables.beside_paper([tmp_path]).splitlines() if l.startswith("| ")][1:]
  names = [l.split(" | ")[1] for l in lines]
  assert names == ["f_D", "retrain", "neggrad", "mixunlearn_agnostic",
                   "mixunlearn_agnostic_vanilla_mixup", "mixunlearn_agnostic_no_real"]
  # Table 3, MNIST: w/o L_real's Test_r is 67.00; our seeds give 67 and 68.
  assert lines[-1].split(" | ")[2] == "67.50 ± 0.50 (67.00)"


def test_a_method_diverged_on_one_seed_is_listed_apart_and_keeps_its_row(tmp_path):
  per_seed = {s: {name: {"metrics": {"Test_r": 90.0 + s, "Test_f": 0.0, "ASR": 25.0},
                         "seconds": 10.0, "examples_per_sec": 1.0}
                  for name in ("initial", "retrain", "mixunlearn_aware")} for s in (0, 1)}
  for s in (0, 1):  # NegGrad+ diverged on seed 1 only: no mean over seed 0 alone
    per_seed[s]["neggrad"] = (
        {"diverged": {"stage": "seed_1/unlearn_neggrad", "step": 1800, "values": {"loss": "nan"}}}
        if s else dict(per_seed[s]["mixunlearn_aware"]))
  out = report.aggregate(per_seed, METRICS)
  assert list(out["models"]) == ["initial", "retrain", "mixunlearn_aware"]
  assert list(out["diverged"]["neggrad"]) == [1]
  assert "neggrad (seed_1/unlearn_neggrad at step 1800: loss nan)" in report.markdown(out)
  out.update(dataset="mnist", setup="class")
  (tmp_path / "results.json").write_text(json.dumps(out))
  rows = {l.split(" | ")[1]: l for l in tables.beside_paper([tmp_path]).splitlines()
          if l.startswith("| ")}
  assert "| diverged (98.89) | diverged (81.89) |" in rows["neggrad"]  # the paper's NegGrad
  neggrad_again = {**out, "models": {n: out["models"][n] for n in ("initial", "retrain")}}
  with pytest.raises(ValueError, match="neggrad is in two workdirs"):
    paper.merge([out, neggrad_again])


def test_fixed_budget_against_the_rule_pairs_each_method_s_runs_with_their_stops(tmp_path):
  def workdir(name, models, stops):
    per_seed = {s: {n: {"metrics": {"Test_r": test_r, "Test_f": 0.0, "ASR": 25.0 + s},
                        "seconds": seconds, "examples_per_sec": 1.0,
                        **({"stop": {"step": stops[n], "budget": 100,
                                     "reason": "forgotten" if stops[n] < 100 else "budget",
                                     "rule": {"step": 40}}} if n in stops else {})}
                    for n, (test_r, seconds) in models.items()} for s in (0, 1)}
    out = report.aggregate(per_seed, METRICS)
    out.update(dataset="mnist", setup="class")
    (tmp_path / name).mkdir()
    (tmp_path / name / "results.json").write_text(json.dumps(out))
    return tmp_path / name

  shared = {"initial": (99.0, 50.0), "retrain": (98.0, 200.0)}
  fixed = workdir("fixed", {**shared, "mixunlearn_aware": (99.0, 100.0)}, {"mixunlearn_aware": 100})
  # The rule's workdir read Retrain's time before Retrain was trained again (300 s, stale):
  # its rows divide by the 200 s of the Retrain row shown.
  rule = workdir("rule", {**shared, "retrain": (98.0, 300.0), "mixunlearn_aware": (98.5, 20.0)},
                 {"mixunlearn_aware": 40})
  lines = [l for l in tables.fixed_against_rule([fixed], [rule]).splitlines()
           if l.startswith("| ")][1:]
  assert [l.split(" | ")[:2] for l in lines] == [
      ["| retrain", ""], ["| mixunlearn_aware", "fixed budget"], ["| mixunlearn_aware", "rule"]]
  # Distance: the mean gap over Test_r, Test_f, ASR: |99 - 98| / 3 and |98.5 - 98| / 3.
  assert lines[1].endswith("| 0.33 | 100 | 0.50 | 100/100 budget (rule met at 40, 40) |")
  assert lines[2].endswith("| 0.17 | 20 | 0.10 | 40/100 forgotten |")
  other = workdir("other", {**shared, "retrain": (97.0, 200.0), "neggrad": (90.0, 1.0)}, {})
  with pytest.raises(ValueError, match="different retrain"):
    tables.fixed_against_rule([fixed], [other])


def test_the_stop_cell_names_the_seeds_where_the_dry_run_s_rule_was_never_met():
  stop = {"step": {"mean": 3700.0}, "budget": 3700, "reasons": ["budget"] * 3}
  assert (report.stop_cell({**stop, "rule_steps": [350, None, 2150]})
          == "3700/3700 budget (rule met at 350, never, 2150)")
  assert report.stop_cell({**stop, "rule_steps": [None] * 3}) == "3700/3700 budget (rule never met)"


def test_the_stop_cell_takes_the_seeds_mean_budget():
  # A shard ensemble's budget depends on where D_f fell: 6680, 6680 and 6660 steps.
  summaries = [{"step": b, "budget": b, "reason": "budget", "rule": {"step": s}}
               for b, s in [(6680, 500), (6680, 1100), (6660, 500)]]
  assert (report.stop_cell(report._stopping(summaries))  # pylint: disable=protected-access
          == "6673/6673 budget (rule met at 500, 1100, 500)")


def test_a_reused_stage_s_time_is_read_from_the_workdir_that_trained_it(tmp_path):
  # A class-level base trained f_D (50 s); a data-level base reused it and trained Retrain
  # (200 s); the aware workdir reused both. f_D and Retrain were trained again after the aware
  # job copied their times (70 s and 300 s, now stale). The workdirs were moved since
  # (docs/records): the config's paths no longer exist, the owners sit beside.
  def workdir(name, records, pretrain="", retrain=""):
    config = {"methods": [n for n in records if n not in ("initial", "retrain")], "seeds": [0],
              "setup": "data", "data": {"name": "mnist"}, "plots": False,
              "pretrain": {"reuse_workdir": pretrain}, "retrain": {"reuse_workdir": retrain}}
    folder = tmp_path / "moved" / name
    (folder / "seed_0" / "eval").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    for model, seconds in records.items():
      record = {"metrics": {"Test_r": 98.0, "Test_f": 0.0, "ASR": 25.0}, "seconds": seconds,
                "compile_seconds": 1.0, "examples_per_sec": 1.0}
      (folder / "seed_0" / "eval" / f"{model}.json").write_text(json.dumps(record))
    return str(folder)

  workdir("class", {"initial": 50.0, "retrain": 400.0})
  workdir("data", {"initial": 70.0, "retrain": 200.0}, pretrain="runs/class")
  aware = workdir("aware", {"initial": 70.0, "retrain": 300.0, "neggrad": 20.0},
                  pretrain="runs/class", retrain="runs/data")
  out = report.rebuild(aware, METRICS)
  assert out["timings"] == {"initial": 50.0, "retrain": 200.0, "neggrad": 20.0}
  assert out["cost_ratio"]["neggrad"] == pytest.approx(0.1)
  # Followed through a workdir that itself reused the stage: the data base's f_D is class's.
  assert report.rebuild(str(tmp_path / "moved" / "data"), METRICS)["timings"]["initial"] == 50.0
  # With no owner to be found, the copied times stand.
  lone = workdir("lone", {"initial": 70.0, "retrain": 300.0}, pretrain="gone", retrain="gone2")
  assert report.rebuild(lone, METRICS)["timings"] == {"initial": 70.0, "retrain": 300.0}


def test_time_over_retrain_averages_each_seed_s_ratio_and_names_the_machines_when_they_differ():
  # Seed 0 ran on a machine 2.5x faster than seeds 1-2: NegGrad+ costs 0.1 of Retrain on each.
  speed = {0: ("fast", 1.0), 1: ("slow", 2.5), 2: ("slow", 2.5)}
  per_seed = {s: {n: {"metrics": {"Test_r": 98.0, "Test_f": 0.0, "ASR": 25.0},
                      "seconds": seconds * factor, "examples_per_sec": 1.0, "machine": machine}
                  for n, seconds in (("initial", 50.0), ("retrain", 200.0), ("neggrad", 20.0))}
              for s, (machine, factor) in speed.items()}
  out = report.aggregate(per_seed, METRICS)
  assert out["cost_ratio"]["neggrad"] == pytest.approx(0.1)
  assert out["machines"] == {0: ["fast"], 1: ["slow"], 2: ["slow"]}
  note = "seed 0: fast; seeds 1, 2: slow."
  assert note in report.markdown(out, "t")
  out.update(dataset="mnist", setup="class")
  table = paper.markdown(paper.merge([out]), set())
  assert note in table
  assert "| 0.10 |" in next(l for l in table.splitlines() if "| neggrad |" in l)
  for s in (1, 2):  # one machine: no note
    for record in per_seed[s].values():
      record["machine"] = "fast"
  assert "different machines" not in report.markdown(report.aggregate(per_seed, METRICS), "t")
