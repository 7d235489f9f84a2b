"""The report's figures: per-sample loss densities (paper §5.7), t-SNE of the models'
embeddings (§5.6) and mixed samples (A.9)."""

import hashlib
import os

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from scipy import stats  # pylint: disable=g-import-not-at-top,wrong-import-position
from sklearn import manifold  # pylint: disable=g-import-not-at-top,wrong-import-position
import threadpoolctl  # pylint: disable=g-import-not-at-top,wrong-import-position

# How each set of the embedding sample is marked (evaluation/metrics.py: EMBEDDING_SETS).
SET_MARKERS = {"forget": ("X", "forget (D_f)"), "remain": ("o", "remain (D_r)"),
               "test": ("^", "test")}


def loss_densities(losses, path, title=""):
  """KDE of per-sample cross-entropy on D_f ('forgetting') and the test set ('unseen').

  Args:
    losses: {model name: {'forget': array, 'test': array}}.
    path: the PNG to write.
  """
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
  for ax, part, label in [(axes[0], "forget", "forgetting (D_f)"), (axes[1], "test", "unseen (test)")]:
    values = np.concatenate([v[part] for v in losses.values()])
    grid = np.linspace(0, np.percentile(values, 99) + 1e-3, 300)
    for name, v in losses.items():
      ax.plot(grid, _density(v[part], grid), label=name)
    ax.set_xlabel("cross-entropy")
    ax.set_title(label)
    # A log axis, so the initial model's spike at zero does not flatten the rest.
    ax.set_yscale("log")
    ax.set_ylim(1e-3, 1e2)  # near-zero losses give near-delta densities: clip them
  axes[0].set_ylabel("density")
  axes[1].legend(fontsize=8)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def tsne(embeddings, path, *, title="", seed=0, perplexity=30.0, max_iter=500, missing=(),
         cache=None):
  """One panel per model: a seeded 2-D t-SNE of its embeddings, coloured by class.

  Args:
    embeddings: {model name: {'embed': [N, D], 'set': [N] names of SET_MARKERS,
      'label': [N] classes}}.
    path: the PNG to write.
    missing: models without saved embeddings (ensembles), named under the panels.
    cache: an .npz of the points (see `tsne_points`).
  Returns:
    {model name: its [N, 2] points}.
  """
  points = tsne_points(embeddings, seed=seed, perplexity=perplexity, max_iter=max_iter,
                       cache=cache)
  num_classes = 1 + max(int(e["label"].max()) for e in embeddings.values())
  cmap = plt.get_cmap("tab10" if num_classes <= 10 else "turbo")
  cols = min(4, len(points))
  rows = -(-len(points) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows + 0.8), squeeze=False)
  for ax, (name, xy) in zip(axes.flat, points.items()):
    e = embeddings[name]
    colours = cmap(e["label"] if num_classes <= 10 else e["label"] / max(num_classes - 1, 1))
    for part, (marker, _) in SET_MARKERS.items():
      chosen = e["set"] == part
      ax.scatter(xy[chosen, 0], xy[chosen, 1], c=colours[chosen], marker=marker, s=10,
                 linewidths=0, alpha=0.8)
    ax.set_title(name, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
  for ax in axes.flat[len(points):]:
    ax.axis("off")
  handles = [plt.Line2D([], [], marker=marker, color="gray", linestyle="", label=label)
             for marker, label in SET_MARKERS.values()]
  if num_classes <= 10:
    handles += [plt.Line2D([], [], marker="s", color=cmap(c), linestyle="", label=f"class {c}")
                for c in range(num_classes)]
  fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), fontsize=8)
  note = f"\nno embedding saved (not one classifier): {', '.join(missing)}" if missing else ""
  fig.suptitle(f"{title}\nt-SNE of features['embed'], colour: class{note}", fontsize=10)
  fig.tight_layout(rect=(0, 0.06, 1, 1))
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return points


def tsne_points(embeddings, *, seed, perplexity, max_iter, cache=None):
  """{model name: [N, 2]}: each model's t-SNE of embeddings[name]['embed'].

  With `cache`, an .npz of the points and a hash of what made each, a model
  whose embeddings and settings are unchanged is not computed again (about
  1 s for 750 points here, per model, on every rebuild of the report), and
  the file is rewritten with this call's points.
  """
  settings = f"{seed},{perplexity},{max_iter}".encode()
  keys = {name: hashlib.sha256(np.ascontiguousarray(e["embed"]).tobytes() + settings).hexdigest()
          for name, e in embeddings.items()}
  saved = {}
  if cache and os.path.exists(cache):
    with np.load(cache) as f:
      saved = dict(f)
  points = {name: saved[f"{name}.points"] if str(saved.get(f"{name}.key")) == key
            else _tsne_2d(embeddings[name]["embed"], seed, perplexity, max_iter)
            for name, key in keys.items()}
  if cache:
    np.savez(cache, **{f"{name}.points": p for name, p in points.items()},
             **{f"{name}.key": np.array(key) for name, key in keys.items()})
  return points


def _tsne_2d(embed, seed, perplexity, max_iter):
  embed = np.asarray(embed, np.float64)
  # On a busy machine, OpenMP threads waiting on each other made the same t-SNE 10-30x
  # slower than one thread (about 1 s for 750 points).
  with threadpoolctl.threadpool_limits(1):
    return manifold.TSNE(2, perplexity=min(perplexity, len(embed) - 1), max_iter=max_iter,
                         init="pca", random_state=seed).fit_transform(embed)


def forgetting(traces, path, title=""):
  """The stopping rule's trace against the step, one colour per method, each stop marked.

  Panels: the attack AUC (D_f sample vs held-out samples of its classes, with
  the rule's band around 0.5), the forget accuracies (the D_f sample solid,
  held-out samples of D_f's classes dashed) and the guard's held-out
  accuracy (with its threshold). A solid vertical line marks where the rule
  or the guard stopped a method; a dotted one where a dry run's rule would have.

  Args:
    traces: {model name: its stopping summary (eval/<model>.json 'stop':
      'checks' (from step 0, the method's starting model), 'initial' (f_D's),
      'reason', 'step', 'rule', 'rule_config')}.
    path: the PNG to write.
  """
  fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
  for i, (name, trace) in enumerate(traces.items()):
    colour = f"C{i % 10}"
    points = trace["checks"]
    steps = [p["step"] for p in points]
    axes[0].plot(steps, [p["auc"] for p in points], color=colour, label=name)
    axes[1].plot(steps, [p["forget_acc"] for p in points], color=colour, label=name)
    axes[1].plot(steps, [p["heldout_forget_acc"] for p in points], color=colour, linestyle="--")
    if trace["reason"] != "budget":
      stop, style, note = trace["step"], "-", f"{trace['reason']} at {trace['step']}"
    else:
      stop, style = (trace["rule"] or {}).get("step"), ":"
      note = "budget" + (f", rule met at {stop}" if stop is not None else "")
    axes[2].plot(steps, [p["remain_acc"] for p in points], color=colour, label=f"{name} ({note})")
    for ax in axes if stop is not None else ():
      ax.axvline(stop, color=colour, linestyle=style, linewidth=1)
  rule = next(iter(traces.values()))
  tolerance = rule["rule_config"]["auc_tolerance"]
  axes[0].axhspan(0.5 - tolerance, 0.5 + tolerance, color="gray", alpha=0.15)
  guard = rule["initial"]["remain_acc"] - rule["rule_config"]["guard_tolerance"]
  axes[2].axhline(guard, color="gray", linestyle="--", linewidth=1)
  for ax, label in zip(axes, ["attack AUC (0.5: unseen)",
                              "forget accuracy (%): D_f sample —, held-out - -",
                              "held-out remain accuracy (%), guard - -"]):
    ax.set_xlabel("step")
    ax.set_title(label, fontsize=9)
  axes[2].legend(fontsize=8)
  fig.suptitle(f"{title}\nstopping rule: solid line, where it stopped; dotted, where a dry run "
               "would have")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _density(values, grid):
  values = np.asarray(values, np.float64)
  if len(values) < 2 or np.ptp(values) == 0:  # a point mass: draw a spike, not a KDE error
    return np.where(np.abs(grid - values.mean()) <= (grid[1] - grid[0]), 1.0, 0.0)
  return stats.gaussian_kde(values)(grid)


def mixed_samples(samples, path, title="", count=8):
  """Rows: forget image, remain image, mask M0 (weight of x_f), mixed image; λ in titles.

  The masks get their own colour scale, stretched to their range (with a
  colour bar and the range in the title), so that what the generator does
  shows even when its masks stay near 0.5.

  Args:
    samples: {'x_forget', 'x_remain', 'mask', 'x_mix': [B,H,W,C], 'lam': [] or [B]}.
  """
  count = min(count, len(samples["x_forget"]))
  lam = np.broadcast_to(np.asarray(samples["lam"]), (len(samples["x_forget"]),))[:count]
  masks = np.asarray(samples["mask"][..., 0], np.float32)
  low, high = float(masks[:count].min()), float(masks[:count].max())
  rows = [("x_f", samples["x_forget"]), ("x_r", samples["x_remain"]),
          ("M0", samples["mask"][..., :1]), ("x_mix", samples["x_mix"])]
  fig, axes = plt.subplots(len(rows), count, figsize=(1.4 * count + 0.8, 1.5 * len(rows)),
                           squeeze=False)
  for r, (name, images) in enumerate(rows):
    for i in range(count):
      ax = axes[r][i]
      if name == "M0":
        shown = ax.imshow(masks[i], cmap="viridis", vmin=low, vmax=max(high, low + 1e-6))
      else:
        ax.imshow(_displayable(images[i]), cmap="gray", vmin=0, vmax=1)
      ax.set_xticks([])
      ax.set_yticks([])
      if i == 0:
        ax.set_ylabel(name)
      if r == 0:
        ax.set_title(f"λ={lam[i]:.2f}", fontsize=8)
  fig.colorbar(shown, ax=list(axes[2]), fraction=0.02, pad=0.01, label="M0")
  fig.suptitle(f"{title}\nM0 (weight of x_f) from {low:.3f} to {high:.3f}")
  fig.savefig(path, dpi=100, bbox_inches="tight")
  plt.close(fig)
  return low, high


def _displayable(image):
  """A normalised image stretched to [0, 1] for display."""
  image = np.asarray(image, np.float32)
  image = (image - image.min()) / max(float(np.ptp(image)), 1e-6)
  return image[..., 0] if image.shape[-1] == 1 else image
