"""The final recipe (configs/final.py) on a Cloud TPU v5p slice: Splash attention inside Ulysses.

  TPU=mmprolong ZONE=us-east5-a launch/tpu_slice.sh train configs/final_tpu.py \\
      /mnt/ckpt/mmprolong \\
      --config.init_checkpoint=/mnt/ckpt/qwen2_5_vl_7b_converted --config.data.root=/mnt/data/shards

which runs on every worker of the slice

  python -m mmprolong_jax.train --config configs/final_tpu.py --workdir /mnt/ckpt/mmprolong \\
      --config.init_checkpoint=/mnt/ckpt/qwen2_5_vl_7b_converted --config.data.root=/mnt/data/shards

Sized for v5p-128 (64 chips, 95 GB HBM each, 16 hosts x 4 chips): FSDP 32 x Ulysses 2 holds the
32-row batch one row per chip pair, 2 rows per host. On v5p-256 add `--config.mesh.sequence=4`
(ulysses degree 4 = the 7B model's 4 KV heads). Workdir and shards must be paths every host sees
(a Filestore/NFS mount or gcsfuse); see launch/README.md.

Reported: as configs/final.py (the study trained on GPUs; same data and optimizer here).
"""
from configs import final


def get_config():
  c = final.get_config()
  c.attention.local_backend = "splash"   # the TPU kernel inside Ulysses
  c.attention.vision_backend = "blockwise"   # window slots and image rows; splash not tried there
  return c
