"""Training state, the optimizer, and gradient accumulation over micro-batches.

`TrainState` holds only arrays (params, optimizer state, step); the optax transformation
`tx` is a static Python object passed next to it, so the state is a plain pytree that can be
donated, sharded and checkpointed.

Gradient accumulation is an explicit micro-batch loop inside the jitted step
(`accumulate_gradients`, a `lax.scan`), not `optax.MultiSteps`: one call of the step is one
optimizer update whatever `grad_accum` is, so step counts, schedules, checkpoints and GRPO's
mu iterations mean the same thing with and without accumulation, and the micro-batches can be
weighted so that the accumulated gradient equals the full-batch gradient exactly (e.g. by
token counts for a token-mean loss).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp
import optax

Array = jax.Array


@flax.struct.dataclass
class TrainState:
    """params: the model pytree; opt_state: optax state; step: int32 [] updates applied."""

    params: Any
    opt_state: Any
    step: Array

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation) -> "TrainState":
        return cls(params=params, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32))

    def apply_gradients(self, grads: Any, tx: optax.GradientTransformation) -> "TrainState":
        updates, opt_state = tx.update(grads, self.opt_state, self.params)
        return self.replace(params=optax.apply_updates(self.params, updates),
                            opt_state=opt_state, step=self.step + 1)


def jit_train_step(step_fn: Callable, *, state_sharding: Optional[Any] = None,
                   batch_sharding: Optional[Any] = None, num_middle: int = 0) -> Callable:
    """`step_fn(state, *middle, batch) -> (state, metrics)` jitted once, the state donated.

    state_sharding / batch_sharding (pytrees of `jax.sharding.Sharding`, or None to follow
    the arguments' own placement) fix the input shardings; the new state keeps
    state_sharding. The `num_middle` arguments between them (e.g. teacher or reference
    parameters) keep the placement they are passed with.
    """
    def step(state, *args):
        new_state, metrics = step_fn(state, *args)
        if state_sharding is not None:
            new_state = jax.lax.with_sharding_constraint(new_state, state_sharding)
        return new_state, metrics

    kwargs = {}
    if state_sharding is not None or batch_sharding is not None:
        kwargs["in_shardings"] = (state_sharding,) + (None,) * num_middle + (batch_sharding,)
    return jax.jit(step, donate_argnums=0, **kwargs)


def make_schedule(learning_rate: float, warmup_steps: int, total_steps: int,
                  schedule: str = "cosine", final_lr_fraction: float = 0.0) -> optax.Schedule:
    """Linear warmup from 0 to `learning_rate` over `warmup_steps`, then constant or cosine
    decay to `final_lr_fraction * learning_rate` at `total_steps`."""
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    if warmup_steps < 0 or total_steps <= 0 or warmup_steps > total_steps:
        raise ValueError(f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps "
                         f"({total_steps}) and total_steps > 0")
    if schedule == "constant":
        after = optax.constant_schedule(learning_rate)
    else:
        after = optax.cosine_decay_schedule(learning_rate, max(total_steps - warmup_steps, 1),
                                            alpha=final_lr_fraction)
    if warmup_steps == 0:
        return after
    warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
    return optax.join_schedules([warmup, after], [warmup_steps])


def _decay_mask(params: Any) -> Any:
    # Weight decay on matrices only: norms and biases (ndim < 2) are not decayed.
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(learning_rate: float, weight_decay: float = 0.0, b1: float = 0.9,
                   b2: float = 0.999, grad_clip: Optional[float] = 1.0, warmup_steps: int = 0,
                   total_steps: int = 1, schedule: str = "cosine",
                   final_lr_fraction: float = 0.0, eps: float = 1e-8
                   ) -> optax.GradientTransformation:
    """AdamW after global-norm clipping (`grad_clip` None or 0: no clipping), with the
    learning-rate schedule of `make_schedule`. Weight decay skips 0/1-d parameters."""
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if grad_clip is not None and grad_clip < 0:
        raise ValueError(f"grad_clip must be >= 0 or None, got {grad_clip!r}")
    lr = make_schedule(learning_rate, warmup_steps, total_steps, schedule, final_lr_fraction)
    adamw = optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=_decay_mask)
    if not grad_clip:
        return adamw
    return optax.chain(optax.clip_by_global_norm(grad_clip), adamw)


def split_micro_batches(batch: Any, num_micro: int) -> Any:
    """Every leaf [B, ...] -> [num_micro, B / num_micro, ...] (contiguous micro-batches)."""
    def split(x):
        if x.shape[0] % num_micro:
            raise ValueError(f"batch size {x.shape[0]} (leaf of shape {x.shape}) is not "
                             f"divisible by grad_accum={num_micro}")
        return x.reshape(num_micro, x.shape[0] // num_micro, *x.shape[1:])
    return jax.tree.map(split, batch)


def accumulate_gradients(loss_fn: Callable[[Any, Any], tuple[Array, dict]], params: Any,
                         batch: Any, grad_accum: int,
                         weight_fn: Optional[Callable[[Any], Array]] = None
                         ) -> tuple[Array, Any, dict]:
    """Loss, gradient and metrics of `loss_fn(params, batch) -> (loss, metrics)`, computed
    over `grad_accum` micro-batches with a `lax.scan` (one micro-batch's activations live at a
    time).

    The result is the weighted sum over micro-batches m of (loss_m, grad_m, metrics_m) with
    weights w_m = weight_fn(micro_m) / sum_m' weight_fn(micro_m') (equal weights by default).
    Choose weight_fn so that the sum equals the full-batch loss: equal weights for a mean
    over sequences, token counts for a mean over tokens. Gradients accumulate in float32.
    """
    if not isinstance(grad_accum, int) or grad_accum < 1:
        raise ValueError(f"grad_accum must be a positive int, got {grad_accum!r}")
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if grad_accum == 1:
        (loss, metrics), grads = grad_fn(params, batch)
        return loss, grads, metrics
    micro = split_micro_batches(batch, grad_accum)
    if weight_fn is None:
        weights_M = jnp.full((grad_accum,), 1.0 / grad_accum, jnp.float32)
    else:
        raw_M = jax.vmap(weight_fn)(micro).astype(jnp.float32)
        weights_M = raw_M / jnp.maximum(jnp.sum(raw_M), 1e-30)

    def body(acc, xs):
        mb, w = xs
        (loss, metrics), grads = grad_fn(params, mb)
        acc = jax.tree.map(lambda a, x: a + w * x.astype(jnp.float32), acc,
                           (loss, grads, metrics))
        return acc, None

    zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32),
                         jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro)))
    (loss, metrics), grads = zeros
    (loss, grads, metrics), _ = jax.lax.scan(body, (loss, grads, metrics), (micro, weights_M))
    grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)
    return loss, grads, metrics
