"""Data parallel: the same global batch on 1, 2 or 4 devices gives the same losses."""

import ast
import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs 5 supervised and 5 MixUnlearn steps (gen_interval 2) on a fixed global
# batch of 8 and prints the losses and a parameter checksum.
SCRIPT = r"""
import json
import jax, jax.numpy as jnp, numpy as np, optax
from mixunlearn_jax import config, methods, models
from mixunlearn_jax.engine import parallel, supervised

model, mesh = models.create("cnn"), parallel.make_mesh()
put = lambda tree: jax.device_put(tree, parallel.data_sharded(mesh))
rng = np.random.default_rng(0)
batches = [{side: {"image": rng.normal(size=(8, 8, 8, 1)).astype(np.float32),
                   "label": rng.integers(0, 10, 8).astype(np.int32)}
            for side in ("forget", "remain")} for _ in range(5)]
out = {"devices": jax.device_count(), "train": [], "unlearn": []}
tx = optax.adam(1e-3)
state = supervised.create_train_state(model, tx, jax.random.key(0), (8, 8, 1), mesh)
step = parallel.jit_step(supervised.train_step, mesh, model=model, tx=tx)
for b in batches:
  state, m = step(state, put(b["forget"]))
  out["train"].append(float(m["loss"]))
hp = config.base_config().mixunlearn
hp.gen_interval = 2
ctx = methods.UnlearnContext(model=model, initial=state.variables, image_shape=(8, 8, 1),
    num_classes=10, num_forget=40, num_remain=100, batch_size=8, config=hp, seed=0,
    mesh=mesh)
program = methods.get("mixunlearn_agnostic").build(ctx)
ustep = parallel.jit_step(program.phases[0].step, mesh, num_frozen=1)
initial = {"initial": state.variables}
ustate = program.state
for b in batches:
  ustate, m = ustep(ustate, put(b), initial)
  out["unlearn"].append([float(m[k]) for k in ("l_unlearn", "l_mix", "l_real", "l_gen")])
out["checksum"] = float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(ustate.unlearner)))
print(json.dumps(out))
"""


def run(devices):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300, check=True)
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def single():
  return run(1)


@pytest.mark.parametrize("devices", [2, 4])
def test_same_losses_on_more_devices(single, devices):
  multi = run(devices)
  assert multi["devices"] == devices and single["devices"] == 1
  np.testing.assert_allclose(multi["train"], single["train"], rtol=1e-4)
  np.testing.assert_allclose(multi["unlearn"], single["unlearn"], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(multi["checksum"], single["checksum"], rtol=1e-5)


# A convolution's gradient, batch sharded over 2 devices: prints the shapes of
# the compiled program's collectives.
CONV_SCRIPT = r"""
import re
import jax, jax.numpy as jnp
from mixunlearn_jax.engine import parallel
from mixunlearn_jax.models import conv
mesh = parallel.make_mesh()
x = jax.device_put(jnp.ones((8, 16, 16, 4)), parallel.data_sharded(mesh))
w = jax.device_put(jnp.ones((3, 3, 4, 6)), parallel.replicated(mesh))
loss = lambda w, x: jnp.sum(jnp.sin(conv.conv_general_dilated(jax.nn.relu(x * 2 + 1), w, (1, 1),
                                                              "SAME")))
hlo = jax.jit(jax.grad(loss), out_shardings=parallel.replicated(mesh)).lower(w, x).compile()
print(re.findall(r"= f32\[([\d,]*)\]\S* (?:all-reduce|all-gather|collective-permute|all-to-all)\(",
                 hlo.as_text()))
"""


def test_data_parallel_convolution_gradient_communicates_only_the_kernel_gradient():
  # models/conv.py's backward pass must not add collectives of its own (its
  # fusion barrier once read the sharded activations: an all-reduce per layer).
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  result = subprocess.run([sys.executable, "-c", CONV_SCRIPT], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=True)
  shapes = ast.literal_eval(result.stdout.strip().splitlines()[-1])
  # One all-reduce, of the kernel gradient (in whatever layout XLA keeps it).
  assert [sorted(map(int, shape.split(","))) for shape in shapes] == [[3, 3, 4, 6]], shapes
