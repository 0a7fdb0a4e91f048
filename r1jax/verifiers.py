"""Learned verifiers: outcome (ORM), process (PRM) and pairwise (Bradley-Terry) reward models.

All three are one scalar value head over the transformer trunk:

    vparams = {"trunk": model params, "head": {"w": [D], "b": []}}
    v_BT = h_BTD @ w + b          (h = `model.hidden_states`, final-norm hidden states)

* ORM: score = sigmoid(v at the last real token); binary cross-entropy on correct / incorrect
  samples (Cobbe et al. 2021).
* PRM: score = sigmoid(v) at the end of every reasoning step (a mask [B, T] marks them); binary
  cross-entropy against hard (0/1) or soft (fraction in [0, 1]) step labels (Lightman et al.
  2023; Wang et al. 2024, Math-Shepherd).
* Bradley-Terry RM: reward = v at the last real token (unbounded);
  loss = -log sigmoid(r_chosen - r_rejected) (Ouyang et al. 2022).

Solutions are encoded as `question` followed by every step, each step followed by the step
delimiter (appended unless the step already ends with it, so steps a sampler produced with their
delimiter and steps from a task's worked solution encode alike). A step's score sits on its
delimiter's last token, and the ORM reads the last delimiter. Sampled solutions are scored on
the tokens that were sampled (`join_steps`, `prm_batch_from_ids`, `orm_batch_from_ids`): the
prompt's ids, then each step's ids as they are, each step scored at its last token (the
delimiter's last token, or the stop token of a final step); nothing is re-encoded from text.

Monte Carlo step labels (`mc_step_labels`): from each step prefix, k rollouts of the policy are
completed and checked; hard label = any rollout correct, soft label = fraction correct.

Pure functions; nothing here writes files or prints.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from r1jax import model, rewards
from r1jax.model import ModelConfig

Array = jax.Array
VParams = dict[str, Any]

AGGREGATIONS = ("min", "prod", "last")
LOSSES = ("orm", "prm", "bt")


# ----------------------------------------------------------------------------- parameters

def init_verifier(trunk: model.Params, cfg: ModelConfig, key: Array, scale: float = 0.01
                  ) -> VParams:
    """Verifier params over a copy of `trunk` (so donating them never frees the caller's policy)
    with a value head w ~ normal(0, scale / sqrt(D)) [D], b = 0 []."""
    w = jax.random.normal(key, (cfg.d_model,), jnp.float32) * (scale / np.sqrt(cfg.d_model))
    return {"trunk": jax.tree.map(jnp.array, trunk),
            "head": {"w": w, "b": jnp.zeros((), jnp.float32)}}


def values(vparams: VParams, cfg: ModelConfig, tokens_BT: Array) -> Array:
    """Value-head logits float32 [B, T] at every position (causal: v_t sees tokens <= t)."""
    h_BTD = model.hidden_states(vparams["trunk"], tokens_BT, cfg).astype(jnp.float32)
    head = vparams["head"]
    return jnp.einsum("BTD,D->BT", h_BTD, head["w"].astype(jnp.float32)) + head["b"]


def _at_last(v_BT: Array, lengths_B: Array) -> Array:
    idx_B1 = (lengths_B.astype(jnp.int32) - 1)[:, None]
    return jnp.take_along_axis(v_BT, idx_B1, axis=1)[:, 0]


def final_logits(vparams: VParams, cfg: ModelConfig, tokens_BT: Array, lengths_B: Array
                 ) -> Array:
    """Value-head logit float32 [B] at each row's last real token (position lengths - 1).
    This is the Bradley-Terry reward r; the ORM's probability of correctness is its
    sigmoid."""
    return _at_last(values(vparams, cfg, tokens_BT), lengths_B)


@functools.partial(jax.jit, static_argnames="cfg")
def prm_step_scores(vparams: VParams, cfg: ModelConfig, tokens_BT: Array, step_mask_BT: Array
                    ) -> Array:
    """PRM step scores float32 [B, T]: sigmoid(v) where step_mask is True, 0 elsewhere."""
    return jnp.where(step_mask_BT, jax.nn.sigmoid(values(vparams, cfg, tokens_BT)), 0.0)


def aggregate_step_scores(scores_BT: Array, step_mask_BT: Array, how: str) -> Array:
    """One score per solution [B] from step scores [B, T] on the masked positions.

    how: "min" (weakest step), "prod" (all steps right, as independent probabilities) or
    "last" (the score of the final step). Rows without any step give NaN.
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {how!r}")
    # numpy in, numpy out (float64): search calls this on host arrays in Python loops.
    xp = np if isinstance(scores_BT, np.ndarray) and isinstance(step_mask_BT, np.ndarray) \
        else jnp
    scores_BT = xp.asarray(scores_BT, np.float64 if xp is np else jnp.float32)
    mask_BT = xp.asarray(step_mask_BT, bool)
    if scores_BT.shape != mask_BT.shape or scores_BT.ndim != 2:
        raise ValueError(f"scores {scores_BT.shape} and step_mask {mask_BT.shape} must both be "
                         "[B, T]")
    if how == "min":
        out = xp.min(xp.where(mask_BT, scores_BT, xp.inf), axis=1)
    elif how == "prod":
        out = xp.prod(xp.where(mask_BT, scores_BT, 1.0), axis=1)
    else:
        T = mask_BT.shape[1]
        last_B = xp.max(xp.where(mask_BT, xp.arange(T)[None, :], -1), axis=1)
        out = xp.take_along_axis(scores_BT, xp.maximum(last_B, 0)[:, None], axis=1)[:, 0]
    return xp.where(mask_BT.any(axis=1), out, xp.nan)


# ----------------------------------------------------------------------------- losses

def orm_loss(vparams: VParams, cfg: ModelConfig, tokens: Array, lengths: Array, labels: Array
             ) -> tuple[Array, dict]:
    """Mean binary cross-entropy of the ORM logit at the last real token against labels [B]
    (1 = correct solution, 0 = incorrect; soft values allowed)."""
    logit_B = final_logits(vparams, cfg, tokens, lengths)
    labels_B = labels.astype(jnp.float32)
    loss = optax.sigmoid_binary_cross_entropy(logit_B, labels_B).mean()
    acc = ((logit_B > 0) == (labels_B > 0.5)).mean()
    return loss, {"accuracy": acc}


def prm_loss(vparams: VParams, cfg: ModelConfig, tokens: Array, step_mask: Array,
             targets: Array) -> tuple[Array, dict]:
    """Binary cross-entropy of the value logits against step targets [B, T] (hard 0/1 or soft
    in [0, 1]), averaged over the positions where step_mask [B, T] is True."""
    v_BT = values(vparams, cfg, tokens)
    mask_BT = step_mask.astype(jnp.float32)
    targets_BT = targets.astype(jnp.float32)
    bce_BT = optax.sigmoid_binary_cross_entropy(v_BT, targets_BT)
    count = jnp.maximum(mask_BT.sum(), 1.0)
    loss = (bce_BT * mask_BT).sum() / count
    acc = (((v_BT > 0) == (targets_BT > 0.5)) * mask_BT).sum() / count
    return loss, {"accuracy": acc}


def bt_loss(vparams: VParams, cfg: ModelConfig, chosen_tokens: Array, chosen_lengths: Array,
            rejected_tokens: Array, rejected_lengths: Array) -> tuple[Array, dict]:
    """Bradley-Terry loss -log sigmoid(r_chosen - r_rejected), mean over pairs [B]."""
    r_c = final_logits(vparams, cfg, chosen_tokens, chosen_lengths)
    r_r = final_logits(vparams, cfg, rejected_tokens, rejected_lengths)
    loss = -jax.nn.log_sigmoid(r_c - r_r).mean()
    return loss, {"accuracy": (r_c > r_r).mean(), "margin": (r_c - r_r).mean()}


_LOSS_FNS = {"orm": orm_loss, "prm": prm_loss, "bt": bt_loss}


def make_train_step(kind: str, cfg: ModelConfig, optimizer: optax.GradientTransformation
                    ) -> Callable:
    """Jitted `step(vparams, opt_state, batch) -> (vparams, opt_state, metrics)`.

    kind: "orm" (batch keys tokens, lengths, labels), "prm" (tokens, step_mask, targets) or
    "bt" (chosen_tokens, chosen_lengths, rejected_tokens, rejected_lengths); the `make_*_batch`
    helpers build these dicts. vparams and opt_state are donated.
    """
    if kind not in _LOSS_FNS:
        raise ValueError(f"verifier kind must be one of {LOSSES}, got {kind!r}")
    loss_fn = _LOSS_FNS[kind]

    def step(vparams, opt_state, batch):
        grad_fn = jax.value_and_grad(lambda p: loss_fn(p, cfg, **batch), has_aux=True)
        (loss, metrics), grads = grad_fn(vparams)
        updates, opt_state = optimizer.update(grads, opt_state, vparams)
        vparams = optax.apply_updates(vparams, updates)
        return vparams, opt_state, {"loss": loss, **metrics}

    return jax.jit(step, donate_argnums=(0, 1))


# ----------------------------------------------------------------------------- encoding

def solution_text(question: str, steps: Sequence[str], delimiter: str = "\n") -> str:
    """The text a verifier reads: question, then each step ending with the delimiter."""
    return question + "".join(_with_delimiter(s, delimiter) for s in steps)


def _with_delimiter(step: str, delimiter: str) -> str:
    return step if step.endswith(delimiter) else step + delimiter


def encode_solution(tokenizer, question: str, steps: Sequence[str], delimiter: str = "\n",
                    add_bos: bool = True) -> tuple[list[int], list[int]]:
    """Token ids of `solution_text(question, steps)` and the position of each step's end
    (its delimiter's last token), encoded piece by piece so step ends are exact for any
    tokenizer. Returns (ids [T], step_ends [num_steps])."""
    if not delimiter:
        raise ValueError("delimiter must be a non-empty string")
    return join_steps(tokenizer.encode(question, add_bos=add_bos),
                      [tokenizer.encode(_with_delimiter(s, delimiter)) for s in steps])


def join_steps(prompt_ids: Sequence[int], step_ids: Sequence[Sequence[int]]
               ) -> tuple[list[int], list[int]]:
    """Token ids of a prompt followed by its steps' ids as they are (e.g. as sampled: nothing
    re-encoded or appended), and the position of each step's last token, where its score sits.
    Returns (ids [T], step_ends [num_steps])."""
    ids = [int(t) for t in prompt_ids]
    ends = []
    for step in step_ids:
        ids.extend(int(t) for t in step)
        ends.append(len(ids) - 1)
    return ids, ends


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, length: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Right-pads ragged id lists into (tokens int32 [B, T], lengths int32 [B]).
    T = `length` if given (ValueError if a row is longer), else the longest row."""
    lengths = np.array([len(s) for s in seqs], np.int32)
    T = int(lengths.max(initial=1)) if length is None else length
    if lengths.size and lengths.max() > T:
        row = int(lengths.argmax())
        raise ValueError(f"sequence {row} has {lengths[row]} tokens, more than length={T}")
    if lengths.size and lengths.min() == 0:
        raise ValueError(f"sequence {int(lengths.argmin())} is empty")
    tokens = np.full((len(seqs), T), pad_id, np.int32)
    for b, s in enumerate(seqs):
        tokens[b, :len(s)] = s
    return tokens, lengths


def make_prm_batch(tokenizer, questions: Sequence[str], steps: Sequence[Sequence[str]],
                   labels: Sequence[Sequence[float]] | None = None, delimiter: str = "\n",
                   add_bos: bool = True, length: int | None = None) -> dict[str, np.ndarray]:
    """PRM batch: tokens int32 [B, T], lengths int32 [B], step_mask bool [B, T] (True at step
    ends) and, with labels (one per step, hard or soft), targets float32 [B, T]."""
    if len(questions) != len(steps):
        raise ValueError(f"{len(questions)} questions but {len(steps)} step lists")
    encoded = [encode_solution(tokenizer, q, s, delimiter, add_bos)
               for q, s in zip(questions, steps)]
    return _step_batch(encoded, labels, tokenizer.pad_id, length)


def prm_batch_from_ids(prompt_ids: Sequence[Sequence[int]],
                       step_ids: Sequence[Sequence[Sequence[int]]],
                       labels: Sequence[Sequence[float]] | None = None, pad_id: int = 0,
                       length: int | None = None) -> dict[str, np.ndarray]:
    """`make_prm_batch` of token ids as sampled (`join_steps`: each step scored at its last
    token): tokens int32 [B, T], lengths int32 [B], step_mask bool [B, T], targets [B, T]."""
    if len(prompt_ids) != len(step_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(step_ids)} step lists")
    return _step_batch([join_steps(q, s) for q, s in zip(prompt_ids, step_ids)], labels,
                       pad_id, length)


def _step_batch(encoded: Sequence[tuple[list[int], list[int]]], labels, pad_id: int,
                length: int | None) -> dict[str, np.ndarray]:
    """The PRM batch of (ids, step_ends) rows (see `make_prm_batch`)."""
    tokens, lengths = pad_batch([ids for ids, _ in encoded], pad_id, length)
    mask = np.zeros(tokens.shape, bool)
    targets = np.zeros(tokens.shape, np.float32)
    for b, (_, ends) in enumerate(encoded):
        mask[b, ends] = True
        if labels is not None:
            if len(labels[b]) != len(ends):
                raise ValueError(f"labels[{b}] has {len(labels[b])} entries for "
                                 f"{len(ends)} steps")
            targets[b, ends] = labels[b]
    batch = {"tokens": tokens, "lengths": lengths, "step_mask": mask}
    if labels is not None:
        batch["targets"] = targets
    return batch


def make_orm_batch(tokenizer, questions: Sequence[str], steps: Sequence[Sequence[str]],
                   labels: Sequence[float], delimiter: str = "\n", add_bos: bool = True,
                   length: int | None = None) -> dict[str, np.ndarray]:
    """ORM batch: tokens int32 [B, T], lengths int32 [B], labels float32 [B]."""
    if not len(questions) == len(steps) == len(labels):
        raise ValueError(f"questions ({len(questions)}), steps ({len(steps)}) and labels "
                         f"({len(labels)}) must have the same length")
    seqs = [encode_solution(tokenizer, q, s, delimiter, add_bos)[0]
            for q, s in zip(questions, steps)]
    return _outcome_batch(seqs, labels, tokenizer.pad_id, length)


def orm_batch_from_ids(prompt_ids: Sequence[Sequence[int]],
                       step_ids: Sequence[Sequence[Sequence[int]]], labels: Sequence[float],
                       pad_id: int = 0, length: int | None = None) -> dict[str, np.ndarray]:
    """`make_orm_batch` of token ids as sampled (`join_steps`): tokens int32 [B, T], lengths
    int32 [B], labels float32 [B]."""
    if not len(prompt_ids) == len(step_ids) == len(labels):
        raise ValueError(f"prompts ({len(prompt_ids)}), step lists ({len(step_ids)}) and "
                         f"labels ({len(labels)}) must have the same length")
    return _outcome_batch([join_steps(q, s)[0] for q, s in zip(prompt_ids, step_ids)], labels,
                          pad_id, length)


def _outcome_batch(seqs, labels, pad_id: int, length: int | None) -> dict[str, np.ndarray]:
    tokens, lengths = pad_batch(seqs, pad_id, length)
    return {"tokens": tokens, "lengths": lengths, "labels": np.asarray(labels, np.float32)}


def make_pair_batch(tokenizer, questions: Sequence[str], chosen: Sequence[Sequence[str]],
                    rejected: Sequence[Sequence[str]], delimiter: str = "\n",
                    add_bos: bool = True, length: int | None = None) -> dict[str, np.ndarray]:
    """Bradley-Terry batch: chosen_/rejected_ tokens int32 [B, T] and lengths int32 [B]
    (both padded to the same T)."""
    if not len(questions) == len(chosen) == len(rejected):
        raise ValueError(f"questions ({len(questions)}), chosen ({len(chosen)}) and rejected "
                         f"({len(rejected)}) must have the same length")
    enc = lambda steps: [encode_solution(tokenizer, q, s, delimiter, add_bos)[0]
                         for q, s in zip(questions, steps)]
    c, r = enc(chosen), enc(rejected)
    T = length or max(len(x) for x in c + r)
    ct, cl = pad_batch(c, tokenizer.pad_id, T)
    rt, rl = pad_batch(r, tokenizer.pad_id, T)
    return {"chosen_tokens": ct, "chosen_lengths": cl, "rejected_tokens": rt,
            "rejected_lengths": rl}


# ----------------------------------------------------------------------------- MC labels

def mc_step_labels(rollout_fn: Callable[[list[str], Array], list[str]], question: str,
                   steps: Sequence[str], answer: str, k: int, key: Array, *,
                   delimiter: str = "\n",
                   check: Callable[[str, str], float] | None = None
                   ) -> tuple[list[float], list[float]]:
    """Monte Carlo step labels (Math-Shepherd): k rollouts from each step prefix.

    rollout_fn(prefixes, key) -> completions: the policy continuing each prefix text
      (`solution_text(question, steps[:i + 1])`) to the end; called once, with the
      num_steps * k prefixes in step order (k copies of prefix 0, then of prefix 1, ...).
    check(full_text, answer) -> truthy when prefix + completion is correct (default
      `r1jax.rewards.accuracy_reward`).
    Returns (hard, soft), one label per step: hard = 1.0 if any rollout is correct else 0.0;
    soft = the fraction of correct rollouts.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    check = check or rewards.accuracy_reward
    prefixes = [solution_text(question, steps[:i + 1], delimiter)
                for i in range(len(steps)) for _ in range(k)]
    if not prefixes:
        return [], []
    completions = rollout_fn(prefixes, key)
    if len(completions) != len(prefixes):
        raise ValueError(f"rollout_fn returned {len(completions)} completions for "
                         f"{len(prefixes)} prefixes")
    ok = np.array([bool(check(p + c, answer)) for p, c in zip(prefixes, completions)],
                  np.float64).reshape(len(steps), k)
    return [float(x) for x in ok.max(axis=1)], [float(x) for x in ok.mean(axis=1)]
