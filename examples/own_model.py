r"""Unlearning with your own Flax model, in a few lines: digits, class 0 forgotten.

    python -m examples.own_model [--method=mixunlearn_aware] [--epochs=8]

The model below is not one of the package's: it returns bare logits, takes
no `train` argument, has no BatchNorm and no `dtype`. MixUnlearn mixes a
spatial feature map; `features={'mix': 'Conv_1'}` names the submodule whose
output that map is (any submodule path of the params tree). Methods that read
an embedding (LAF, L-Mix) take `features={'embed': ...}` the same way.
"""

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn import datasets

import mixunlearn_jax as mu
from mixunlearn_jax import runtime


class SmallCNN(nn.Module):
  """conv-pool-conv-mean-dense: the second convolution's output is the map to mix."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(16, (3, 3))(x))
    x = nn.avg_pool(x, (2, 2), (2, 2))
    x = nn.relu(nn.Conv(32, (3, 3))(x))
    return nn.Dense(10)(x.mean(axis=(1, 2)))


def digits(seed=0):
  """sklearn's 8x8 digits as [N, 8, 8, 1] floats in [0, 1]: 80% train, 20% test."""
  bunch = datasets.load_digits()
  images = (bunch.images / 16.0).astype(np.float32)[..., None]
  order = np.random.default_rng(seed).permutation(len(images))
  cut = int(0.8 * len(images))
  return ((images[order[:cut]], bunch.target[order[:cut]]),
          (images[order[cut:]], bunch.target[order[cut:]]))


def train(model, images, labels, *, epochs=30, batch_size=32, seed=0):
  """f_D: plain Adam on cross-entropy (your own training code goes here)."""
  variables = model.init(jax.random.key(seed), images[:1])
  tx = optax.adam(3e-3)
  opt_state = tx.init(variables["params"])

  @jax.jit
  def step(params, opt_state, x, y):
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(  # noqa: E731
        model.apply({"params": p}, x), y).mean()
    updates, opt_state = tx.update(jax.grad(loss)(params), opt_state)
    return optax.apply_updates(params, updates), opt_state

  params, rng = variables["params"], np.random.default_rng(seed)
  for _ in range(epochs):
    order = rng.permutation(len(images))
    for start in range(0, len(order) - batch_size + 1, batch_size):
      batch = order[start:start + batch_size]
      params, opt_state = step(params, opt_state, jnp.asarray(images[batch]),
                               jnp.asarray(labels[batch]))
  return {"params": params}


def main(method="mixunlearn_aware", epochs=8, forget_class=0):
  runtime.configure()  # optional: XLA:CPU's faster settings, before JAX's first computation
  (x, y), test = digits()
  model = SmallCNN()
  variables = train(model, x, y)
  forget, remain = (x[y == forget_class], y[y == forget_class]), (x[y != forget_class],
                                                                    y[y != forget_class])
  before = mu.evaluate(model, variables, forget, remain, test)["metrics"]
  unlearned = mu.unlearn(model, variables, forget, remain, method=method,
                         features={"mix": "Conv_1"}, epochs=epochs, lr=1e-3)
  after = mu.evaluate(model, unlearned, forget, remain, test)["metrics"]
  print(f"{method}: {unlearned.seconds:.1f} s ({unlearned.examples_per_sec:.0f} examples/s), "
        f"last losses {unlearned.losses}")
  for name, scores in [("f_D", before), (method, after)]:
    print(f"  {name:18s} " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()))
  return before, after


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--method", default="mixunlearn_aware")
  parser.add_argument("--epochs", type=int, default=8)
  args = parser.parse_args()
  main(args.method, args.epochs)
