"""Rollouts as tokens: the sampler's output packed with its prompts, the one data path that
GRPO, held-out evaluation, verifier data, rejection sampling, STaR and distillation consume.

`sample(params, cfg, prompts, key, sampling)` runs `sampler.generate` and packs each of the
B = P * G rows (row b = p * G + g: prompt p, sample g) as one right-padded sequence on the
device, so no host loop rebuilds sequences:

  tokens           int32 [B, T]     prompt + completion, pad_id after
  prompt_lengths   int32 [B]
  lengths          int32 [B]        generated tokens (up to and including the stop token)
  completion_mask  float32 [B, T-1] aligned with targets tokens[:, 1:] (as `r1jax.logprobs`):
                                    column t is 1 iff tokens[:, t+1] is a generated token
  logprobs         float32 [B, T-1] the sampler's log-probs at those columns, 0 elsewhere
                                    (under the distribution sampled from: tempered/truncated)
  stopped          bool [B]         a stop token or string ended the row
  truncated        bool [B]         the row ran to max_new_tokens without stopping
  group_size       G (static)

Text is decoded only on demand (`texts`), where a reward or a person reads it.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from r1jax import sampler as sampler_lib
from r1jax.model import ModelConfig

Array = jax.Array


@flax.struct.dataclass
class Rollout:
    """B = P * G sampled sequences (see the module docstring for the fields' shapes)."""
    tokens: Array
    prompt_lengths: Array
    lengths: Array
    completion_mask: Array
    logprobs: Array
    stopped: Array
    truncated: Array
    group_size: int = flax.struct.field(pytree_node=False, default=1)

    @property
    def num_groups(self) -> int:
        return self.tokens.shape[0] // self.group_size

    def completion_ids(self, b: int) -> list[int]:
        """The generated ids of row b (stop token included)."""
        start = int(self.prompt_lengths[b])
        return np.asarray(self.tokens[b, start:start + int(self.lengths[b])]).tolist()

    def texts(self, tokenizer) -> list[list[str]]:
        """Decoded completions, [P][G]."""
        tokens, starts, lens = (np.asarray(x) for x in (self.tokens, self.prompt_lengths,
                                                        self.lengths))
        flat = [tokenizer.decode(tokens[b, s:s + n].tolist())
                for b, (s, n) in enumerate(zip(starts, lens))]
        G = self.group_size
        return [flat[p * G:(p + 1) * G] for p in range(len(flat) // G)]

    def select_groups(self, groups: Sequence[int]) -> "Rollout":
        """The rollout of the given groups (prompts), in that order; repeats allowed."""
        G = self.group_size
        rows = (np.asarray(groups, np.int64)[:, None] * G + np.arange(G)[None, :]).reshape(-1)
        return jax.tree.map(lambda x: x[rows], self)

    def to_numpy(self) -> "Rollout":
        return jax.tree.map(np.asarray, self)


def concat(rollouts: Sequence[Rollout]) -> Rollout:
    """Rows of several rollouts of one group size and sequence length, in order."""
    if len({r.group_size for r in rollouts}) != 1 or len({r.tokens.shape[1] for r in
                                                           rollouts}) != 1:
        raise ValueError("rollouts to concatenate need one group size and sequence length, got "
                         f"{[(r.group_size, r.tokens.shape) for r in rollouts]}")
    return jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *rollouts)


@functools.partial(jax.jit, static_argnames=("group_size", "length", "max_new"))
def _pack(prompt_PT: Array, prompt_len_P: Array, comp_BM: Array, comp_lp_BM: Array,
          comp_len_B: Array, stopped_B: Array, pad_id: Array, *, group_size: int, length: int,
          max_new: int) -> Rollout:
    """Packs right-padded prompts [P, T] and completions [B, M] (B = P * G) into [B, T]."""
    M = comp_BM.shape[1]
    n_p = jnp.repeat(prompt_len_P, group_size)                      # [B]
    t = jnp.arange(length)[None, :]                                 # [1, T]
    in_prompt = t < n_p[:, None]
    j = jnp.clip(t - n_p[:, None], 0, M - 1)                        # completion index
    in_comp = ~in_prompt & (t - n_p[:, None] < comp_len_B[:, None])
    prompt_BT = jnp.repeat(prompt_PT, group_size, axis=0)
    tokens = jnp.where(in_prompt, prompt_BT,
                       jnp.where(in_comp, jnp.take_along_axis(comp_BM, j, axis=1), pad_id))
    lp = jnp.where(in_comp, jnp.take_along_axis(comp_lp_BM, j, axis=1), 0.0)
    return Rollout(tokens=tokens.astype(jnp.int32), prompt_lengths=n_p.astype(jnp.int32),
                   lengths=comp_len_B.astype(jnp.int32),
                   completion_mask=in_comp[:, 1:].astype(jnp.float32),
                   logprobs=lp[:, 1:].astype(jnp.float32), stopped=stopped_B,
                   truncated=(comp_len_B >= max_new) & ~stopped_B, group_size=group_size)


def sample(params, cfg: ModelConfig, prompts: Sequence[Sequence[int]], key: Array,
           sampling: sampler_lib.SamplingConfig, *, tokenizer=None, pad_id: int = 0,
           length: Optional[int] = None, shard=None) -> Rollout:
    """Samples `sampling.num_samples` completions of each prompt and packs them (see module).

    length: T of the packed sequences (fixed across calls so that consumers compile once);
    default: the longest prompt + max_new_tokens. Everything else as `sampler.generate`;
    pass the tokenizer's eos id in `sampling.stop_tokens` to stop at EOS.
    """
    out = sampler_lib.generate(params, cfg, prompts, key, sampling, tokenizer=tokenizer,
                               pad_id=pad_id, shard=shard)
    P, G, M = out.tokens.shape
    lens = [len(p) for p in prompts]
    T = max(lens) + M if length is None else length
    if max(lens) + M > T:
        raise ValueError(f"longest prompt ({max(lens)}) + max_new_tokens ({M}) exceeds the "
                         f"rollout length {T}")
    prompt_PT = np.full((P, T), pad_id, np.int32)   # [P, T]: one shape per length
    for i, p in enumerate(prompts):
        prompt_PT[i, :len(p)] = np.asarray(p, np.int32)
    return _pack(jnp.asarray(prompt_PT), jnp.asarray(lens, jnp.int32),
                 out.tokens.reshape(P * G, M), out.logprobs.reshape(P * G, M),
                 out.lengths.reshape(P * G), out.stopped.reshape(P * G), jnp.int32(pad_id),
                 group_size=G, length=T, max_new=M)
