"""Orbax checkpoints: exact round trip, cross-mesh restore, fallback, retention, HF CLIs."""
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from r1jax import checkpoint, model, sharding

CFG = model.ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=8, n_kv_heads=2,
                        head_dim=16, d_ff=128, qkv_bias=True, max_seq_len=64)
OPT = optax.adamw(1e-2)
ROOT = pathlib.Path(__file__).parent.parent


def _state(mesh_axes, seed=0):
    """Params and a non-trivial Adam state laid out on a mesh."""
    mesh = sharding.make_mesh(mesh_axes)
    params, p_sh = sharding.init_params_sharded(CFG, jax.random.key(seed), mesh)
    o_sh = sharding.opt_state_shardings(jax.eval_shape(OPT.init, params), params, p_sh)
    grads = jax.tree.map(lambda p: 0.1 * p + 0.01, params)
    opt_state = jax.jit(lambda p, g: OPT.update(g, OPT.init(p), p)[1],
                        out_shardings=o_sh)(params, grads)
    return mesh, params, p_sh, opt_state, o_sh


def _equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


@pytest.fixture(scope="module")
def fsdp8():
    return _state(dict(fsdp=8))


def test_round_trip_is_bit_exact_and_cross_mesh(tmp_path, fsdp8):
    _, params, _, opt_state, _ = fsdp8
    key = jax.random.split(jax.random.key(7))[1]
    extra = {"data_position": 1234, "metrics": {"loss": 0.25}, "name": "run"}
    with checkpoint.CheckpointManager(tmp_path) as ckpt:
        assert ckpt.save(5, params=params, opt_state=opt_state, key=key, extra=extra,
                         model_config=CFG)
        ckpt.wait()
        # Restore onto (data=2, tensor=4) from an fsdp=8 save.
        mesh2 = sharding.make_mesh(dict(data=2, fsdp=1, tensor=4))
        p_sh2 = sharding.param_shardings(CFG, mesh2)
        o_abs = jax.eval_shape(OPT.init, params)
        target = {"params": sharding.abstract_with_shardings(model.param_shapes(CFG), p_sh2),
                  "opt_state": sharding.abstract_with_shardings(
                      o_abs, sharding.opt_state_shardings(o_abs, params, p_sh2))}
        r = ckpt.restore(target=target)
    assert r.step == 5 and r.extra == extra
    _equal(r.params, params)
    _equal(r.opt_state, opt_state)  # also the optax namedtuple types
    assert jnp.issubdtype(r.key.dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(jax.random.key_data(r.key), jax.random.key_data(key))
    np.testing.assert_array_equal(jax.random.normal(r.key, (3,)), jax.random.normal(key, (3,)))
    assert r.params["layers"]["q"].sharding.spec == p_sh2["layers"]["q"].spec
    assert r.params["layers"]["q"].sharding.mesh.shape == mesh2.shape
    assert r.opt_state[0].mu["layers"]["up"].sharding.spec == p_sh2["layers"]["up"].spec
    assert checkpoint.model_config_from_dict(r.model_config) == CFG


def test_corrupted_newest_step_falls_back_with_a_warning(tmp_path, fsdp8):
    _, params, _, opt_state, _ = fsdp8
    target = {"params": params, "opt_state": opt_state}
    with checkpoint.CheckpointManager(tmp_path, max_to_keep=5) as ckpt:
        for step in (1, 2, 3):
            bumped = jax.tree.map(lambda p: p + step, params)
            ckpt.save(step, params=bumped, opt_state=opt_state, extra={"step": step})
        ckpt.wait()
    # Step 3: garbage in every tensorstore data file. Step 2: data files deleted.
    for f in (tmp_path / "3" / "params").rglob("d/*"):
        f.write_bytes(b"\x00garbage" * 10)
    for f in (tmp_path / "2" / "opt_state").rglob("d/*"):
        f.unlink()
    # An interrupted save leaves only a temporary folder: it is not a step.
    (tmp_path / "4.orbax-checkpoint-tmp-99").mkdir()
    with checkpoint.CheckpointManager(tmp_path, max_to_keep=5) as ckpt:
        assert ckpt.all_steps() == [1, 2, 3]
        with pytest.warns(RuntimeWarning, match="step 3") as record:
            r = ckpt.restore(target=target)
        assert any("step 2" in str(w.message) for w in record)
        assert r.step == 1 and r.extra == {"step": 1}
        _equal(r.params, jax.tree.map(lambda p: p + 1, params))
        with pytest.raises(Exception):  # an explicit step does not fall back
            ckpt.restore(step=3, target=target)


def test_structure_mismatch_names_the_key(tmp_path, fsdp8):
    _, params, _, opt_state, _ = fsdp8
    with checkpoint.CheckpointManager(tmp_path) as ckpt:
        ckpt.save(1, params=params, opt_state=opt_state)
        ckpt.wait()
        missing = {"params": {**params, "lm_head": params["embed"].T}}
        with pytest.raises(ValueError, match="'params/lm_head'"):
            ckpt.restore(target=missing)
        extra_key = {"params": {k: v for k, v in params.items() if k != "final_norm"}}
        with pytest.raises(ValueError, match="'params/final_norm'"):
            ckpt.restore(target=extra_key)
        other = model.param_shapes(CFG.replace(d_ff=64))
        with pytest.raises(ValueError, match="'params/layers/down' has shape"):
            ckpt.restore(target={"params": other})
        # Leaving out a part reads only the parts given (an export needs params only).
        r = ckpt.restore(target={"params": model.param_shapes(CFG)})
        assert r.opt_state is None
        _equal(r.params, params)


def test_retention_keeps_last_n_and_best_and_failed_save_deletes_nothing(tmp_path):
    params = {"w": jnp.arange(4.0)}
    accuracy = {1: 0.9, 2: 0.1, 3: 0.2, 4: 0.3, 5: 0.4}
    with checkpoint.CheckpointManager(tmp_path, max_to_keep=2, best_metric="accuracy") as ckpt:
        for step, acc in accuracy.items():
            ckpt.save(step, params=params, metrics={"accuracy": acc})
        ckpt.wait()
        assert ckpt.all_steps() == [1, 4, 5] and ckpt.best_step() == 1
        with pytest.raises(ValueError, match="accuracy"):
            ckpt.save(6, params=params)
        with pytest.raises(ValueError, match="JSON"):
            ckpt.save(6, params=params, metrics={"accuracy": 1.0}, extra={"f": object()})
        with pytest.raises(Exception):  # fails inside Orbax: an unserialisable leaf
            ckpt.save(6, params={"w": object()}, metrics={"accuracy": 1.0})
            ckpt.wait()
        assert ckpt.all_steps() == [1, 4, 5]
        np.testing.assert_array_equal(ckpt.restore(4).params["w"], params["w"])
    with checkpoint.CheckpointManager(tmp_path, max_to_keep=2, best_metric="loss",
                                      best_mode="min") as ckpt:
        for step, loss in {6: 0.5, 7: 0.05, 8: 0.6, 9: 0.7}.items():
            ckpt.save(step, params=params, metrics={"loss": loss})
        ckpt.wait()
        assert 7 in ckpt.all_steps() and ckpt.all_steps()[-2:] == [8, 9]


def _cli(script, *args):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / script), *args],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_export_and_import_hf_commands_round_trip(tmp_path):
    from r1jax import hf
    params = jax.jit(lambda k: model.init_params(CFG, k))(jax.random.key(3))
    with checkpoint.CheckpointManager(tmp_path / "run") as ckpt:
        ckpt.save(12, params=params, opt_state=OPT.init(params), model_config=CFG)
        ckpt.wait()
    _cli("export_hf.py", f"--checkpoint_dir={tmp_path / 'run'}", f"--out={tmp_path / 'hf'}")
    cfg2, params2 = hf.load_hf(tmp_path / "hf")
    assert cfg2.n_layers == CFG.n_layers and cfg2.d_ff == CFG.d_ff
    _equal(params2, params)
    _cli("import_hf.py", f"--hf_dir={tmp_path / 'hf'}", f"--checkpoint_dir={tmp_path / 'imp'}")
    with checkpoint.CheckpointManager(tmp_path / "imp") as ckpt:
        r = ckpt.restore(target={"params": model.param_shapes(cfg2)})
    assert r.step == 0
    _equal(r.params, params)
    assert checkpoint.model_config_from_dict(r.model_config) == cfg2


@pytest.mark.slow
def test_a_trained_run_exports_with_its_tokenizer_files(tmp_path):
    """export_hf.py on a real SFT run's checkpoint: transformers loads the folder and its logits
    equal r1jax's; the tokenizer files and generation config of the HF folder the run started
    from (model.path in the run's provenance.json) are copied beside the weights."""
    import json
    import torch
    import transformers
    from r1jax import train
    source = tmp_path / "hf_source"
    source.mkdir()
    (source / "tokenizer.json").write_text('{"version": "1.0"}')
    (source / "generation_config.json").write_text('{"eos_token_id": 1}')
    run = tmp_path / "run"
    run.mkdir()
    (run / "provenance.json").write_text(json.dumps({"config": {"model": {"path": str(source)}}}))
    tokens = np.random.default_rng(0).integers(0, CFG.vocab_size, (8, 12)).astype(np.int32)
    params = train.run_sft(model.init_params(CFG, jax.random.key(0)), CFG, tokens,
                           np.ones_like(tokens, np.float32), train.LoopConfig(
                               steps=2, learning_rate=1e-2, checkpoint_every=1),
                           str(run / "sft"), batch_size=4, show_progress=False)
    _cli("export_hf.py", f"--checkpoint_dir={run / 'sft'}", f"--out={tmp_path / 'hf'}")
    assert (tmp_path / "hf" / "tokenizer.json").read_text() == '{"version": "1.0"}'
    assert (tmp_path / "hf" / "generation_config.json").exists()
    net = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").float().eval()
    with torch.no_grad():
        want = net(torch.as_tensor(tokens[:2], dtype=torch.long)).logits.numpy()
    got = np.asarray(model.forward(params, jnp.asarray(tokens[:2]), CFG))
    assert np.abs(got - want).max() < 1e-4
