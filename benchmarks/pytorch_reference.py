r"""An eager PyTorch MixUnlearn step, to compare speeds with mixunlearn_jax.benchmark.

Not part of the package (nothing imports it, and torch is not a requirement):

  pip install torch==2.13.0
  python benchmarks/pytorch_reference.py --model=cnn --batch_size=32 --out=runs/bench/torch_cnn.json
  python benchmarks/pytorch_reference.py --model=resnet18 --batch_size=32 --steps=5 \
      --out=runs/bench/torch_resnet18.json

The models (CNN 449,098 params, cifar-stem ResNet-18), the MixBlock (spec §2),
the losses (spec §3) and the step (spec §4) follow the JAX code, as an
ordinary eager PyTorch program would write them: f_D runs once under no_grad
for the MixBlock's features and the targets; on generator steps L_gen goes
through the unlearner with its parameters' requires_grad off and the MixBlock
takes an Adam step; then the unlearner takes an Adam step on L_mix + ω L_real
over one forward of [x_mix, x_f, x_r], x_mix made under no_grad. BatchNorm
statistics stay frozen (eval mode), as in the JAX default.

Timing and JSON keys match the JAX benchmark: the median of generator-only
steps (gen_interval=1), the median of plain steps (an interval no step
reaches), the mean over whole intervals at gen_interval=4, and the median
supervised step. One unlearning example is one (forget, remain) pair.
"""

import argparse
import copy
import json
import math
import os
import platform
import statistics
import time

import torch
from torch import nn
import torch.nn.functional as F

# base_config().unlearn's defaults (mixunlearn_jax/config.py).
HP = dict(lr=5e-5, generator_lr=1e-4, gen_interval=4, alpha=0.75, tau_gen=1.0, tau_mix=20.0,
          tau_real=20.0, omega=10.0, sharpen_temperature=0.3)
IMAGE_SHAPE = {"cnn": (1, 28, 28), "resnet18": (3, 32, 32)}  # (C, H, W)
NORM_EPS = 1e-8


class CNN(nn.Module):
  """Conv5x5(16)-pool-Conv5x5(32)-pool-Linear256-Linear128-Linear(classes), 449,098 params."""

  def __init__(self, num_classes=10, image_size=28):
    super().__init__()
    self.conv1 = nn.Conv2d(1, 16, 5, padding=2)
    self.conv2 = nn.Conv2d(16, 32, 5, padding=2)
    self.embed = nn.Linear(32 * (image_size // 4) ** 2, 256)
    self.fc = nn.Linear(256, 128)
    self.head = nn.Linear(128, num_classes)

  def forward(self, x):
    x = F.max_pool2d(F.relu(self.conv1(x)), 2)
    mix = F.max_pool2d(F.relu(self.conv2(x)), 2)
    embed = self.embed(mix.flatten(1))
    return self.head(self.fc(embed)), {"mix": mix, "embed": embed}


class BasicBlock(nn.Module):

  def __init__(self, in_planes, planes, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = None
    if stride != 1 or in_planes != planes:
      self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                      nn.BatchNorm2d(planes))

  def forward(self, x):
    y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
    return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
  """CIFAR stem (3x3, stride 1, no max-pool); `mix` is the stage-3 output."""

  def __init__(self, num_classes=10, widths=(64, 128, 256, 512)):
    super().__init__()
    self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False),
                              nn.BatchNorm2d(widths[0]), nn.ReLU())
    stages, in_planes = [], widths[0]
    for i, width in enumerate(widths):
      stages.append(nn.Sequential(BasicBlock(in_planes, width, 1 if i == 0 else 2),
                                  BasicBlock(width, width, 1)))
      in_planes = width
    self.stages = nn.ModuleList(stages)
    self.embed = nn.Linear(widths[-1], 256)
    self.head = nn.Linear(256, num_classes)

  def forward(self, x):
    x = self.stem(x)
    for i, stage in enumerate(self.stages):
      x = stage(x)
      if i == 2:
        mix = x
    embed = self.embed(x.mean(dim=(2, 3)))
    return self.head(embed), {"mix": mix, "embed": embed}


class MixBlock(nn.Module):
  """Spec §2: cross-attention of forget and remain feature maps into a 2-channel mask."""

  def __init__(self, channels):
    super().__init__()
    self.hidden = channels // 2
    self.query = nn.Conv2d(channels + 1, self.hidden, 1)
    self.key = nn.Conv2d(channels + 1, self.hidden, 1)
    self.value = nn.Conv2d(channels + 1, 1, 1)
    for conv in (self.query, self.key, self.value):
      nn.init.normal_(conv.weight, std=0.01)
      nn.init.zeros_(conv.bias)

  def forward(self, feat_forget, feat_remain, lam, image_hw):
    batch, _, height, width = feat_forget.shape
    lam = torch.as_tensor(lam, dtype=torch.float32).reshape(-1, 1, 1, 1)
    lam = lam.expand(batch, 1, height, width)
    a = torch.cat([feat_forget.float(), lam], dim=1)
    b = torch.cat([feat_remain.float(), 1.0 - lam], dim=1)
    flat = lambda t: t.flatten(2).transpose(1, 2).float()  # [B, HW, C]  # noqa: E731
    q_a, q_b = flat(F.relu(self.query(a))), flat(F.relu(self.query(b)))
    k_a, k_b = flat(F.relu(self.key(a))), flat(F.relu(self.key(b)))
    v_a, v_b = flat(self.value(a)), flat(self.value(b))

    def attend(q, k, v):
      return torch.softmax(q @ k.transpose(1, 2) / math.sqrt(self.hidden), dim=-1) @ v

    m = torch.cat([attend(q_a, k_b, v_a), attend(q_b, k_a, v_b)], dim=-1)  # [B, HW, 2]
    m = m.transpose(1, 2).reshape(batch, 2, height, width)
    m = F.interpolate(m, size=image_hw, mode="bilinear", align_corners=False)
    return torch.softmax(m, dim=1)


def mix_images(x_forget, x_remain, mask):
  mask = mask.to(x_forget.dtype)
  return x_forget * mask[:, :1] + x_remain * mask[:, 1:]


def sim_loss(a, b):
  a, b = a.float(), b.float()
  norms = a.norm(dim=-1).clamp_min(NORM_EPS) * b.norm(dim=-1).clamp_min(NORM_EPS)
  return 1.0 - (a * b).sum(-1) / norms


def contrastive(probs_mix, target_forget, target_remain, lam, temperature):
  attract = ((1.0 - lam) * sim_loss(probs_mix, target_remain)).mean()
  return attract - torch.logsumexp(lam * sim_loss(probs_mix, target_forget) / temperature, 0)


def l_real(probs_forget, probs_remain, target_forget, target_remain, temperature):
  attract = sim_loss(probs_remain, target_remain).mean()
  return attract - torch.logsumexp(sim_loss(probs_forget, target_forget) / temperature, 0)


def sharpen(probs, temperature):
  log_probs = probs.float().clamp_min(torch.finfo(torch.float32).tiny).log()
  return torch.softmax(log_probs / temperature, dim=-1)


class MixUnlearn:
  """f_D (frozen), the unlearner (a copy of f_D) and the MixBlock, each Adam-trained."""

  def __init__(self, initial, mix_channels, *, gen_interval, label_aware, num_classes, autocast):
    self.initial = initial.eval().requires_grad_(False)
    self.unlearner = copy.deepcopy(initial).eval().requires_grad_(True)  # BN statistics frozen
    self.mixblock = MixBlock(mix_channels).to(next(initial.parameters()).device)
    self.opt = torch.optim.Adam(self.unlearner.parameters(), lr=HP["lr"])
    self.gen_opt = torch.optim.Adam(self.mixblock.parameters(), lr=HP["generator_lr"])
    self.beta = torch.distributions.Beta(torch.tensor(HP["alpha"]), torch.tensor(HP["alpha"]))
    self.gen_interval, self.label_aware, self.num_classes = gen_interval, label_aware, num_classes
    self.autocast = autocast
    self.step_count = 0

  def targets(self, logits, labels):
    if self.label_aware:
      return F.one_hot(labels, self.num_classes).float()
    return sharpen(torch.softmax(logits.float(), -1), HP["sharpen_temperature"])

  def step(self, x_f, y_f, x_r, y_r):
    batch, image_hw = x_f.shape[0], x_f.shape[2:]
    with torch.no_grad(), self.autocast():
      logits, features = self.initial(torch.cat([x_f, x_r]))
      h_f, h_r = features["mix"].chunk(2)
      t_f, t_r = self.targets(logits, torch.cat([y_f, y_r])).split(batch)
    lam_gen, lam_mix = self.beta.sample(), self.beta.sample()

    l_gen = None
    if self.step_count % self.gen_interval == 0:
      self.unlearner.requires_grad_(False)
      with self.autocast():
        x_mix = mix_images(x_f, x_r, self.mixblock(h_f, h_r, lam_gen, image_hw))
        probs = torch.softmax(self.unlearner(x_mix)[0].float(), -1)
        l_gen = -contrastive(probs, t_f, t_r, lam_gen, HP["tau_gen"])
      self.gen_opt.zero_grad(set_to_none=True)
      l_gen.backward()
      self.gen_opt.step()
      self.unlearner.requires_grad_(True)

    with self.autocast():
      with torch.no_grad():
        x_mix = mix_images(x_f, x_r, self.mixblock(h_f, h_r, lam_mix, image_hw))
      logits, _ = self.unlearner(torch.cat([x_mix, x_f, x_r]))
      p_mix, p_f, p_r = torch.softmax(logits.float(), -1).chunk(3)
      l_mix = contrastive(p_mix, t_f, t_r, lam_mix, HP["tau_mix"])
      loss = l_mix + HP["omega"] * l_real(p_f, p_r, t_f, t_r, HP["tau_real"])
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()
    self.step_count += 1
    return {"l_unlearn": loss.detach(), "l_gen": None if l_gen is None else l_gen.detach()}


def create_model(name, num_classes, image_size):
  if name == "cnn":
    return CNN(num_classes, image_size)
  return ResNet18(num_classes)


def sync(device):
  if device.type == "cuda":
    torch.cuda.synchronize()


def time_steps(step, *, warmup, steps, device):
  for _ in range(warmup):
    step()
  sync(device)
  seconds = []
  for _ in range(steps):
    start = time.perf_counter()
    step()
    sync(device)
    seconds.append(time.perf_counter() - start)
  return seconds


def bench_unlearn(initial, batch, args, device, autocast):
  """Same three runs as the JAX benchmark: generator-only, plain-only, the mix at 4."""
  interval = HP["gen_interval"]
  runs = {"generator": (1, 0, args.steps),
          "plain": (args.warmup + args.steps + 2, 1, args.steps),
          "mix": (interval, 0, -(-args.steps // interval) * interval)}
  with torch.no_grad():
    mix_channels = initial(batch["forget"][0][:1])[1]["mix"].shape[1]
  seconds = {}
  for name, (gen_interval, start_step, num_steps) in runs.items():
    method = MixUnlearn(initial, mix_channels, gen_interval=gen_interval,
                        label_aware=args.label_aware, num_classes=args.num_classes,
                        autocast=autocast)
    method.step_count = start_step
    seconds[name] = time_steps(lambda: method.step(*batch["forget"], *batch["remain"]),
                               warmup=args.warmup, steps=num_steps, device=device)
  mix_s = statistics.mean(seconds["mix"])
  return {"examples_per_step": args.batch_size, "examples_per_sec": args.batch_size / mix_s,
          "steps_per_sec": 1.0 / mix_s, "mix_step_ms": 1e3 * mix_s,
          "generator_step_ms": 1e3 * statistics.median(seconds["generator"]),
          "plain_step_ms": 1e3 * statistics.median(seconds["plain"]),
          "gen_interval": interval, "timed_steps": {k: len(v) for k, v in seconds.items()}}


def bench_train(model, batch, args, device, autocast):
  """The supervised step: Adam on cross-entropy, BatchNorm in train mode."""
  model = copy.deepcopy(model).train().requires_grad_(True)
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)
  images, labels = batch

  def step():
    with autocast():
      loss = F.cross_entropy(model(images)[0].float(), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

  step_s = statistics.median(time_steps(step, warmup=args.warmup, steps=args.steps,
                                        device=device))
  return {"examples_per_step": args.batch_size, "examples_per_sec": args.batch_size / step_s,
          "steps_per_sec": 1.0 / step_s, "step_ms": 1e3 * step_s, "timed_steps": args.steps}


def random_batch(args, device, image_shape):
  def side():
    return (torch.randn(args.batch_size, *image_shape, device=device),
            torch.randint(0, args.num_classes, (args.batch_size,), device=device))
  return {"forget": side(), "remain": side(), "train": side()}


def run(args):
  torch.set_num_threads(args.num_threads)
  torch.manual_seed(args.seed)
  device = torch.device(args.device)
  channels, side, _ = IMAGE_SHAPE[args.model]
  image_shape = (channels, args.image_size or side, args.image_size or side)
  dtype = {"float32": None, "bfloat16": torch.bfloat16}[args.dtype]
  autocast = lambda: torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)  # noqa: E731
  initial = create_model(args.model, args.num_classes, image_shape[1]).to(device).eval()
  batch = random_batch(args, device, image_shape)
  results = {
      "framework": "pytorch", "model": args.model, "batch_size": args.batch_size,
      "dtype": args.dtype, "image_shape": [image_shape[1], image_shape[2], image_shape[0]],
      "label_aware": args.label_aware,
      "examples_per_step": "unlearn_step: batch_size (forget, remain) pairs per step; "
                           "train_step: batch_size images",
      "torch_version": torch.__version__, "jax_version": None, "platform": device.type,
      "device_kind": (torch.cuda.get_device_name(device) if device.type == "cuda"
                      else platform.processor() or "cpu"),
      "device_count": 1, "num_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
      "num_params": sum(p.numel() for p in initial.parameters()),
  }
  results["unlearn_step"] = bench_unlearn(initial, batch, args, device, autocast)
  results["train_step"] = bench_train(initial, batch["train"], args, device, autocast)
  peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
  results["memory"] = {"peak_bytes": peak, "bytes_limit": None}
  return results


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", choices=sorted(IMAGE_SHAPE), default="cnn")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--image_size", type=int, default=0, help="0: 28 for cnn, 32 for resnet18")
  parser.add_argument("--num_classes", type=int, default=10)
  parser.add_argument("--label_aware", action="store_true")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--num_threads", type=int, default=2)
  parser.add_argument("--device", default="cpu")
  parser.add_argument("--out", default=None)
  return parser.parse_args(argv)


def main():
  args = parse_args()
  results = run(args)
  head = f"pytorch {args.model} B={args.batch_size} {args.dtype} on {results['device_kind']}"
  u, t = results["unlearn_step"], results["train_step"]
  print(f"{head} unlearn_step (gen_interval={u['gen_interval']}): "
        f"{u['examples_per_sec']:.1f} pairs/s, {u['steps_per_sec']:.2f} steps/s, "
        f"{u['mix_step_ms']:.2f} ms/step")
  print(f"{head} unlearn_step generator: {u['generator_step_ms']:.2f} ms/step (median)")
  print(f"{head} unlearn_step plain: {u['plain_step_ms']:.2f} ms/step (median)")
  print(f"{head} train_step: {t['examples_per_sec']:.1f} images/s, "
        f"{t['steps_per_sec']:.2f} steps/s, {t['step_ms']:.2f} ms/step")
  if args.out:
    if os.path.dirname(args.out):
      os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(results, f, indent=2)
    print(f"Wrote {args.out}")


if __name__ == "__main__":
  main()
