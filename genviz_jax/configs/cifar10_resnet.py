"""CIFAR-10 (TFDS, prepared offline), ResNet-20/56 with and without skip connections.

Li et al. 2018 §5 (Figs 5-6): shortcuts keep the loss surface of a deep ResNet convex-looking;
without them ("noshort", genviz_jax.models.BasicBlock skip=False) ResNet-20 is mildly and
ResNet-56 strongly chaotic.

  python -m experiments.prepare_data --dataset=cifar10 --data_dir=DATA   # once, needs internet
  python -m experiments.train --config=experiments/configs/cifar10_resnet.py:resnet56_noskip \
      --workdir=runs/c10_r56_noskip --config.data_dir=DATA
Variants: resnet20, resnet20_noskip, resnet56 (= ""), resnet56_noskip; `<variant>_quick` are
smoke tests (32 train / 16 test images, width 0.125, 2 steps).

Recipe (Li et al. §5 and tomgoldstein/loss-landscape cifar10/main.py): momentum SGD 0.9, lr 0.1,
batch 128, weight decay 5e-4 (L2 on the gradient), 300 epochs, lr x0.1 at epochs 150, 225 and
275; parameters kept every epoch (snapshot_every, as their save_epoch=1) for the trajectory
PCA of §7 (~1 GB of snapshots for ResNet-56). Shortcut "pad" (He's option A, parameter-free),
so a net and its noshort twin have the same parameters; Li et al.'s code used 1x1-conv
projections. Differences: this trainer has no data augmentation (Li et al. used random crops
and flips), so test accuracy lands below their ~93-94%. Runtime: not measured here (no data
offline); several GPU-hours for ResNet-56.
"""

from genviz_jax import train

STEPS_PER_EPOCH = 50000 // 128  # 390
EPOCHS = 300
MODELS = ("resnet20", "resnet56")


def _variants() -> tuple[str, ...]:
  full = tuple(f"{m}{s}" for m in MODELS for s in ("", "_noskip"))
  return ("",) + full + tuple(f"{v}_quick" for v in full)


def get_config(variant: str = ""):
  variants = _variants()
  if variant not in variants:
    raise ValueError(f"config variant {variant!r} is not one of: {', '.join(variants[1:])}")
  name = variant.removesuffix("_quick") or "resnet56"
  c = train.default_config()
  c.dataset = "cifar10"
  c.data_dir = ""
  c.dataset_kwargs.seed = 0
  c.model = name.removesuffix("_noskip")
  c.model_kwargs.skip = not name.endswith("_noskip")
  c.optimizer = "momentum"
  c.learning_rate = 0.1
  c.momentum = 0.9
  c.weight_decay = 5e-4
  c.lr_boundaries = tuple(e * STEPS_PER_EPOCH for e in (150, 225, 275))
  c.batch_size = 128
  c.num_steps = EPOCHS * STEPS_PER_EPOCH
  c.log_every = STEPS_PER_EPOCH
  c.eval_every = 5 * STEPS_PER_EPOCH
  c.checkpoint_every = 5 * STEPS_PER_EPOCH
  c.snapshot_every = STEPS_PER_EPOCH
  c.eval_batch_size = 1000
  if variant.endswith("_quick"):
    c.dataset_kwargs.num_train = 32
    c.dataset_kwargs.num_test = 16
    c.model_kwargs.width = 0.125
    c.batch_size = 8
    c.lr_boundaries = ()
    c.num_steps = 2
    c.log_every = 1
    c.eval_every = 1
    c.checkpoint_every = 1
    c.snapshot_every = 1
    c.eval_batch_size = 8
  return c
