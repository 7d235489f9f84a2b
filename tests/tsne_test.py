"""t-SNE of the models' embeddings: the saved sample per seed and the report's plot."""

import os

from matplotlib import image
import numpy as np

from mixunlearn_jax.data import datasets
from mixunlearn_jax.data import splits
from mixunlearn_jax.evaluation import plots
from tests import tiny_config

ENSEMBLES = ("sisa", "dsmixup")  # their predictions are a vote, not one classifier's


def _embeddings(workdir):
  folder = os.path.join(workdir, "seed_0", "eval")
  saved = {}
  for name in ("initial", "retrain", *tiny_config.get_config().methods):
    path = os.path.join(folder, f"{name}_embed.npz")
    if os.path.exists(path):
      with np.load(path) as f:
        saved[name] = dict(f)
  return saved


def test_every_classifier_embeds_the_same_sample_drawn_from_its_sets(tiny_job):
  workdir, _ = tiny_job
  saved = _embeddings(workdir)
  config = tiny_config.get_config()
  assert sorted(saved) == sorted({"initial", "retrain", *config.methods} - set(ENSEMBLES))
  split = splits.Split.load(os.path.join(workdir, "seed_0", "split.npz"))
  digits = datasets.load("digits")
  first = saved["initial"]
  pools = {"forget": split.forget, "remain": split.remain,
           "test": np.arange(len(digits.test_labels))}
  for part, pool in pools.items():
    indices = first["index"][first["set"] == part]
    assert len(indices) == min(config.tsne.samples, len(pool)), part
    assert len(np.unique(indices)) == len(indices) and np.isin(indices, pool).all(), part
    labels = digits.test_labels if part == "test" else digits.train_labels
    np.testing.assert_array_equal(first["label"][first["set"] == part], labels[indices])
  # Class setup: the forget sample is all of class 0, the others hold other classes too.
  assert (first["label"][first["set"] == "forget"] == config.forget_class).all()
  for name, e in saved.items():
    for key in ("index", "set", "label"):
      np.testing.assert_array_equal(e[key], first[key], err_msg=f"{name} {key}")
    assert e["embed"].shape == (len(first["index"]), 256) and np.isfinite(e["embed"]).all()
  assert not np.allclose(saved["initial"]["embed"], saved["retrain"]["embed"])


def test_the_job_draws_one_tsne_figure_per_seed_that_is_not_blank(tiny_job):
  workdir, _ = tiny_job
  pixels = image.imread(os.path.join(workdir, "plots", "tsne_seed0.png"))[..., :3]
  background = np.all(pixels > 0.95, axis=-1)
  assert background.mean() < 0.97  # points, titles and legend cover part of the canvas
  colours = {tuple(p) for p in np.round(pixels[~background] * 8).reshape(-1, 3)}
  assert len(colours) >= 10  # ten class colours at least, besides grey and black


def test_tsne_is_seeded_and_keeps_separated_clusters_apart(tmp_path):
  # Three tight clusters far apart in 64-d: a faithful 2-D map keeps every point's nearest
  # neighbour in its own cluster; the same seed gives the same map.
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(3, 64)) * 20
  cluster = np.repeat(np.arange(3), 40)
  embed = centres[cluster] + rng.normal(size=(120, 64))
  sets = np.array(["forget", "remain", "test"])[np.arange(120) % 3]
  models = {"a": {"embed": embed, "set": sets, "label": cluster},
            "b": {"embed": embed[:, ::-1], "set": sets, "label": cluster}}
  first = plots.tsne(models, tmp_path / "a.png", seed=3, perplexity=10, max_iter=300)
  again = plots.tsne(models, tmp_path / "b.png", seed=3, perplexity=10, max_iter=300,
                     missing=["sisa"])
  for name, points in first.items():
    np.testing.assert_array_equal(points, again[name])
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    np.testing.assert_array_equal(cluster[distances.argmin(axis=1)], cluster)
  assert os.path.getsize(tmp_path / "b.png") > 0


def test_tsne_points_are_computed_again_only_for_changed_embeddings(tmp_path, monkeypatch):
  rng = np.random.default_rng(1)
  models = {name: {"embed": rng.normal(size=(30, 8))} for name in ("a", "b")}
  settings = dict(seed=0, perplexity=5, max_iter=250, cache=tmp_path / "points.npz")
  first = plots.tsne_points(models, **settings)
  computed = []
  monkeypatch.setattr(plots, "_tsne_2d", lambda embed, *args: computed.append(embed) or
                      np.zeros((len(embed), 2)))
  again = plots.tsne_points(models, **settings)
  assert not computed
  for name in models:
    np.testing.assert_array_equal(again[name], first[name])
  models["b"] = {"embed": models["b"]["embed"] + 1.0}
  changed = plots.tsne_points(models, **settings)
  assert len(computed) == 1 and np.array_equal(computed[0], models["b"]["embed"])
  np.testing.assert_array_equal(changed["a"], first["a"])
  plots.tsne_points(models, **dict(settings, max_iter=300))  # other settings: both again
  assert len(computed) == 3
