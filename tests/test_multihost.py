"""Two local processes under jax.distributed (gloo on CPU) agree with one process."""
import importlib.util
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from r1jax import distributed, model

WORKER = pathlib.Path(__file__).with_name("multihost_worker.py")
_spec = importlib.util.spec_from_file_location("multihost_worker", WORKER)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)
TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["args", "jax_env"])
def test_two_processes_match_single_process(tmp_path, how):
    """Started from arguments, and from JAX's standard variables alone."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "R1JAX_", "JAX_"))}
    env["PYTHONPATH"] = str(WORKER.parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
    outs = [tmp_path / f"process{i}.npz" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(i), "2", str(port), str(out), how],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                              text=True) for i, out in enumerate(outs)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        logs = [p.communicate()[0] for p in procs]
        pytest.fail("multi-process run timed out after %d s:\n%s" % (TIMEOUT_S,
                                                                   "\n----\n".join(logs)))
    for i, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"process {i} exited with {p.returncode}:\n{log[-5000:]}"

    cfg = model.ModelConfig(**worker.CFG_KW)
    params = jax.jit(lambda k: model.init_params(cfg, k))(jax.random.key(0))
    logits, loss, new_params = jax.jit(lambda p, t: worker.train_step(p, t, cfg))(
        params, worker.tokens())
    flat = {"param:" + "/".join(str(k.key) for k in path): np.asarray(x)
            for path, x in jax.tree_util.tree_flatten_with_path(new_params)[0]}
    results = [dict(np.load(out)) for out in outs]
    assert [bool(r["main"]) for r in results] == [True, False]
    # Each process loaded only its rows, and together they cover the batch.
    spans = sorted(tuple(r["rows"]) for r in results)
    assert spans[0][0] == 0 and spans[-1][1] == worker.BATCH
    for r in results:
        np.testing.assert_allclose(r["logits"], np.asarray(logits), rtol=0, atol=1e-4)
        np.testing.assert_allclose(r["loss"], np.asarray(loss), rtol=1e-5)
        for name, want in flat.items():
            np.testing.assert_allclose(r[name], want, rtol=0, atol=1e-5, err_msg=name)


def test_single_process_initialisation_is_a_no_op(monkeypatch):
    monkeypatch.delenv(distributed.ENV_COORDINATOR, raising=False)
    assert distributed.initialize_distributed() is False
    assert distributed.initialize_distributed("localhost:1234", num_processes=1) is False
    monkeypatch.setenv(distributed.ENV_COORDINATOR, "localhost:1234")
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "2")
    monkeypatch.setenv(distributed.ENV_PROCESS_ID, "5")
    with pytest.raises(ValueError, match="process_id"):
        distributed.initialize_distributed()
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "two")
    with pytest.raises(ValueError, match="R1JAX_NUM_PROCESSES"):
        distributed.initialize_distributed()
    assert distributed.is_main_process()
    assert distributed.process_rows(8) == slice(0, 8)


def test_global_batch_from_process_rows():
    from r1jax import sharding
    mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2))
    b_sh = sharding.batch_sharding(mesh)
    rows = distributed.process_rows(8, b_sh)
    assert rows == slice(0, 8)  # one process holds every device
    data = np.arange(8 * 3, dtype=np.int32).reshape(8, 3)
    arr = distributed.global_batch(data[rows], b_sh, (8, 3))
    np.testing.assert_array_equal(worker.to_host(arr), data)
    assert arr.sharding.spec == b_sh.spec
    with pytest.raises(ValueError, match="local_rows"):
        distributed.global_batch(data[:4], b_sh, (8, 3))


def test_jax_conventions_start_a_cluster_and_nothing_else(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    for name in (distributed.ENV_COORDINATOR, distributed.JAX_COORDINATOR,
                 distributed.JAX_NUM_PROCESSES, distributed.JAX_PROCESS_ID):
        monkeypatch.delenv(name, raising=False)
    assert distributed.detected_cluster() is None
    assert distributed.initialize_distributed() is False and calls == []
    monkeypatch.setenv(distributed.JAX_COORDINATOR, "10.0.0.1:1234")
    monkeypatch.setenv(distributed.JAX_NUM_PROCESSES, "4")
    monkeypatch.setenv(distributed.JAX_PROCESS_ID, "3")
    assert distributed.detected_cluster() == distributed.JAX_COORDINATOR
    assert distributed.initialize_distributed() is True
    assert calls == [{"num_processes": 4, "process_id": 3}]
    # A detected cluster (here: SLURM's variables, as JAX's detection reads them).
    calls.clear()
    for name in (distributed.JAX_COORDINATOR, distributed.JAX_NUM_PROCESSES,
                 distributed.JAX_PROCESS_ID):
        monkeypatch.delenv(name)
    for name, value in {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[1-2]",
                        "SLURM_NTASKS": "2", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}.items():
        monkeypatch.setenv(name, value)
    assert distributed.detected_cluster() == "SlurmCluster"
    assert distributed.initialize_distributed() is True and calls == [{}]
