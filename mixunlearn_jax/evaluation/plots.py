"""The report's figures: per-sample loss densities (paper §5.7) and mixed samples (A.9)."""

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from scipy import stats  # pylint: disable=g-import-not-at-top,wrong-import-position


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
