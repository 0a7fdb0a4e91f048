"""Prints the sharding plan of a model on meshes of 8 devices, without allocating.

  python experiments/benchmarks/sharding_plan.py [--preset=qwen2.5-1.5b]

For each mesh: every parameter's PartitionSpec, bytes per device, and notes where a mesh
axis does not divide a dimension (that dimension is then replicated over the axis).
"""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8")

from absl import app, flags  # noqa: E402
import jax  # noqa: E402

import r1jax  # noqa: E402
from r1jax import sharding  # noqa: E402

_PRESET = flags.DEFINE_string("preset", "qwen2.5-1.5b", "ModelConfig preset")
MESHES = (dict(data=1, fsdp=8, tensor=1), dict(data=2, fsdp=1, tensor=4))


def main(argv):
    del argv
    cfg = r1jax.ModelConfig.preset(_PRESET.value)
    print(f"{_PRESET.value}: {cfg.num_params():,} parameters, {cfg.param_dtype}")
    for axes in MESHES:
        sizes = sharding.MeshConfig(**axes).sizes(8)
        mesh = jax.sharding.AbstractMesh(sizes, sharding.MESH_AXES)
        rows = sharding.plan(cfg, mesh)
        print(f"\nmesh {dict(zip(sharding.MESH_AXES, sizes))}")
        print(f"  {'parameter':<20} {'shape':<24} {'spec':<42} {'MiB/device':>10}")
        for r in rows:
            print(f"  {r.path:<20} {str(r.shape):<24} {str(r.spec):<42} "
                  f"{r.bytes_per_device / 2**20:>10.2f}")
            for note in r.notes:
                print(f"  {'':<20} note: {note}")
        total = sum(r.bytes_per_device for r in rows)
        print(f"  total per device: {total / 2**20:,.1f} MiB ({total:,} bytes)")


if __name__ == "__main__":
    app.run(main)
