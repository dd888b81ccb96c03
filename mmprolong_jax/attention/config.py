"""Attention configuration (static: it selects code paths at trace time)."""
import dataclasses
from typing import Literal

from jax.sharding import AbstractMesh, Mesh

Backend = Literal["reference", "cudnn", "splash", "ring", "ulysses", "blockwise"]
LOCAL_BACKENDS = ("reference", "blockwise", "cudnn", "splash")
SHARDED_BACKENDS = ("ring", "ulysses")


@dataclasses.dataclass(frozen=True)
class AttentionConfig:
  """Selects and tunes an attention backend.

  backend: 'reference' (plain jnp with an explicit mask; small sizes only, the oracle),
    'blockwise' (tiled jnp flash attention; any platform), 'cudnn' (fused cuDNN flash
    attention, GPU only), 'splash' (TPU splash attention), 'ring' or 'ulysses'
    (sequence parallel over the mesh's 'sequence' axis).
  mesh: mesh for ring/ulysses; None uses the mesh set with `jax.set_mesh`.
  layout: how the token stream is stored: 'natural' (original order) or 'zigzag'
    (`zigzag_permutation(T, sequence_axis_size)` applied once at the model input).
    Kernels that mask by storage index (cudnn, splash) un-permute locally when zigzag.
  local_backend: kernel each device runs inside ulysses (any of LOCAL_BACKENDS). Ring:
    'cudnn' runs every ring step as one fused cuDNN call (fused_step.py; default
    positions and contiguous segment ids required, as for 'cudnn') and, with a
    sequence axis of 1, runs the local cuDNN kernel without a ring; any other value
    uses the tiled jnp block kernel (any platform, any positions).
  block_q, block_kv: tile sizes of the blockwise kernel (also ring's jnp step kernel).
  max_segments: static bound M on segments per row (ring: per shard row) for cuDNN's
    packed (ragged-offset) path; segments past the M-th are silently dropped. Keep it
    tight: XLA sizes cuDNN's grid and backward workspace as if the row were M rows,
    about 2*M*T*H*D*4 bytes of backward workspace (M=16 at T=128K, 28 heads, D=128 did
    not fit an 80 GB H100).
    M=1 promises a single segment per row that starts at index 0 (vision tower rows).
  shard_heads: in ring/ulysses, also split heads over the 'tensor' axis when present.
  splash_interpret: run splash in Pallas interpret mode (CPU testing).
  """
  backend: Backend = "reference"
  mesh: Mesh | AbstractMesh | None = None
  layout: Literal["natural", "zigzag"] = "natural"
  local_backend: Literal["reference", "blockwise", "cudnn", "splash"] = "reference"
  block_q: int = 512
  block_kv: int = 512
  max_segments: int = 8
  shard_heads: bool = True
  splash_interpret: bool = False

  def __post_init__(self):
    if self.backend not in LOCAL_BACKENDS + SHARDED_BACKENDS:
      raise ValueError(f"Unknown attention backend {self.backend!r}; "
                       f"choose from {LOCAL_BACKENDS + SHARDED_BACKENDS}.")
    if self.local_backend not in LOCAL_BACKENDS:
      raise ValueError(
          f"local_backend must be one of {LOCAL_BACKENDS}, got {self.local_backend!r}.")
    if self.layout not in ("natural", "zigzag"):
      raise ValueError(f"layout must be 'natural' or 'zigzag', got {self.layout!r}.")
    if self.block_q <= 0 or self.block_kv <= 0 or self.max_segments <= 0:
      raise ValueError("block_q, block_kv and max_segments must be positive.")
