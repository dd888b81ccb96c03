"""The Grain loader: mixed, shuffled, host-sharded batches of packed rows for the trainer.

Batch contract (numpy, per host; B = global_batch_tokens / max_len / process_count rows of
T = max_len tokens and N = num_patches patches):
  input_ids        [B, T]        int32  token ids, 0 on padding
  segment_ids      [B, T]        int32  0 = padding, 1.. = packed instance within the row
  targets          [B, T]        int32  next token of the same segment (0 at a segment's end)
  loss_mask        [B, T]        int32  1 where targets[b, t] is a supervised token (assistant
                                        answer / OCR target, incl. the <|im_end|> closing it)
  task_id          [B, T]        int32  index into schema.TASKS of the token's segment, -1 on padding
  positions        [3, B, T]     int32  (temporal, height, width) mRoPE ids, restarting per segment
                                        (position_ids.mrope_position_ids)
  patches          [B, N, 1176]  patch_dtype  the row's images patchified by
                                        image_processing.preprocess_image, placed in window slots
                                        of S = vision_shards shards of N/S slots (whole images per
                                        shard), zero padded
  window_segments  [B, S, N/S]    int32 } vision layout of each row, exactly
  pos_hw           [B, S, N/S, 2] int32 } vision_layout.pack_vision_rows' (F image rows of R
  image_gather     [B, S, F/S, R] int32 } positions, 0 = padding); feature_slot maps the k-th
  image_segments   [B, S, F/S, R] int32 } image token of the row to its merged feature in the
  image_scatter    [B, S, N/S]    int32 } tower's shard-major output
  feature_slot     [B, N/4]       int32 }
The batch is this host's slice of the global batch (hosts' rows are disjoint); the trainer places
it on the mesh with the batch axis over (data, fsdp) and tokens over `sequence`.

Config (`data` section, see `default_config`): shards {set: glob}, mixture {set: weight}, max_len,
num_patches, image_rows, image_row_len, images_per_row (sources.vision_slots), global_batch_tokens, seed, worker_count, worker_buffer_size, image_min_pixels,
image_max_pixels, patch_dtype. Mixture weights are shares of rows (of tokens when rows are equally
full). `vision_shards` (make_loader's argument) is the mesh's `sequence` size.

The iterator's `get_state()` is a small JSON-able dict; `set_state()` on a fresh loader built from
the same config (same worker_count) continues with exactly the batches the original would have
produced. With worker_count > 0, each batch is built by one worker process.
"""
from __future__ import annotations


import grain
from absl import flags

from mmprolong_jax.data import mixture
from mmprolong_jax.data.sources import default_config, rows_per_host  # noqa: F401 (re-exported)
from mmprolong_jax.data.featurize import BatchFeaturizer, use_cpu_for_jax
from mmprolong_jax.model.vision_layout import VisionGeometry


def make_loader(data_cfg, model_cfg, *, process_index: int = 0, process_count: int = 1,
                vision_shards: int = 1):
  """Endless iterator of this host's batches (see the module docstring), with get/set_state.

  vision_shards: the mesh's `sequence` size; each row's images are spread over that many vision
  shards (vision_layout.pack_vision_rows).
  """
  batch_rows = rows_per_host(data_cfg, process_count)
  records = mixture.mixed_records(dict(data_cfg.shards), dict(data_cfg.mixture),
                                  seed=data_cfg.seed, process_index=process_index,
                                  process_count=process_count)
  featurize = BatchFeaturizer(max_len=data_cfg.max_len,
                              geometry=VisionGeometry.from_config(data_cfg),
                              min_pixels=data_cfg.image_min_pixels,
                              max_pixels=data_cfg.image_max_pixels,
                              patch_dtype=data_cfg.patch_dtype, model_cfg=model_cfg,
                              vision_shards=vision_shards)
  ds = records.batch(batch_rows, drop_remainder=True, batch_fn=featurize)
  # One batch in flight per process: a 128K row's patches alone are ~2.4 GB in float32.
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=1))
  if data_cfg.worker_count > 0:
    # Worker processes read grain's absl flags; outside an absl app they would be unparsed.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=data_cfg.worker_count,
                                     per_worker_buffer_size=data_cfg.worker_buffer_size),
        worker_init_fn=use_cpu_for_jax)
  return iter(it)
