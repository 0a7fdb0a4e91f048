"""One process of the two-process test (tests/test_multihost.py), also importable.

As a script: `python multihost_worker.py PROCESS_ID NUM_PROCESSES PORT OUT.npz` starts
jax.distributed with 2 CPU devices per process, runs a sharded forward and one SGD step of
a tiny model on the global (fsdp=2, tensor=2) mesh and writes logits, loss and the updated
parameters (gathered to every process) to OUT.npz.
"""
import os
import sys

CFG_KW = dict(vocab_size=256, d_model=64, n_layers=2, n_heads=8, n_kv_heads=2, head_dim=16,
              d_ff=128, qkv_bias=True, tie_embeddings=False, max_seq_len=64)
BATCH, LENGTH, LR = 8, 17, 0.5


def tokens():
    import numpy as np
    return np.random.RandomState(0).randint(0, CFG_KW["vocab_size"], (BATCH, LENGTH),
                                            dtype=np.int32)


def train_step(params, tokens_BT, cfg, shard=None):
    """(logits, loss, SGD-updated params) of next-token cross-entropy."""
    import jax
    import jax.numpy as jnp
    from r1jax import model

    def loss_fn(p):
        logits = model.forward(p, tokens_BT[:, :-1], cfg, shard)
        logp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, tokens_BT[:, 1:, None], axis=-1)), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return logits, loss, jax.tree.map(lambda p, g: p - LR * g, params, grads)


def to_host(x):
    """A global array's full value on every process (an all-gather when multi-process)."""
    import numpy as np
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def main(process_id: int, num_processes: int, port: int, out: str, how: str = "args") -> None:
    """how: "args" passes the coordinator to `initialize_distributed`; "jax_env" sets only
    JAX's standard variables and lets `initialize_distributed()` find the cluster."""
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    import numpy as np
    from r1jax import distributed, model, sharding

    if how == "jax_env":
        os.environ.update({distributed.JAX_COORDINATOR: f"localhost:{port}",
                           distributed.JAX_NUM_PROCESSES: str(num_processes),
                           distributed.JAX_PROCESS_ID: str(process_id)})
        assert distributed.initialize_distributed()
    else:
        assert distributed.initialize_distributed(f"localhost:{port}", num_processes, process_id)
    jax.config.update("jax_default_matmul_precision", "highest")
    assert jax.process_count() == num_processes and jax.device_count() == 2 * num_processes
    cfg = model.ModelConfig(**CFG_KW)
    mesh = sharding.make_mesh(dict(data=1, fsdp=2, tensor=-1))
    params, p_sh = sharding.init_params_sharded(cfg, jax.random.key(0), mesh)
    b_sh = sharding.batch_sharding(mesh, shape=(BATCH, LENGTH))
    rows = distributed.process_rows(BATCH, b_sh)
    local = tokens()[rows]  # a real loader reads only these rows
    batch = distributed.global_batch(local, b_sh, (BATCH, LENGTH))
    shard = sharding.make_shard_fn(mesh)
    step = jax.jit(lambda p, t: train_step(p, t, cfg, shard), in_shardings=(p_sh, b_sh),
                   out_shardings=(None, None, p_sh), donate_argnums=(0,))
    logits, loss, new_params = step(params, batch)
    flat = {"/".join(str(k.key) for k in path): to_host(x)
            for path, x in jax.tree_util.tree_flatten_with_path(new_params)[0]}
    np.savez(out, logits=to_host(logits), loss=to_host(loss),
             rows=np.array([rows.start, rows.stop]), main=distributed.is_main_process(),
             **{"param:" + k: v for k, v in flat.items()})
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], *sys.argv[5:])
