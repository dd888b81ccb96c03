"""The HF transformers + PyTorch side of benchmarks/train_step.py (same row, same GPU)."""
from __future__ import annotations

import time

from bench_common import PAGE_GRID, TINY, _median, flops_of, make_batch, model_cfg

# ----------------------------------------------------------------------------------------------
# Worker: HF transformers + PyTorch
# ----------------------------------------------------------------------------------------------
def worker_hf(job: dict, tiny: bool, out_dir: str) -> dict:
  import numpy as np
  length, backend, dtype = job["length"], job.get("backend", "flash"), job.get("dtype", "bf16")
  opts = set(job.get("extra", "").split("+")) - {""}
  cfg = model_cfg(length, tiny)
  batch, info = make_batch(cfg, length, tiny)
  flops = flops_of(cfg, batch)

  import torch
  import transformers
  from torch.nn.attention import SDPBackend, sdpa_kernel
  from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

  dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  res = {"framework": "hf", "length": length, "backend": backend, "dtype": dtype,
         "torch": torch.__version__, "transformers": transformers.__version__,
         "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "flops": flops}
  res.update(info)
  hf_cfg = Qwen2_5_VLConfig(**cfg.to_hf_dict())
  pdtype = torch.bfloat16 if dtype == "bf16" else torch.float32
  t0 = time.perf_counter()
  torch.manual_seed(0)
  with torch.device(dev):
    try:
      model = Qwen2_5_VLForConditionalGeneration._from_config(
          hf_cfg, attn_implementation="sdpa", dtype=pdtype)
    except TypeError:
      model = Qwen2_5_VLForConditionalGeneration._from_config(
          hf_cfg, attn_implementation="sdpa", torch_dtype=pdtype)
  model.to(dev)
  model.train()
  model.config.use_cache = False
  model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
  res["params"] = sum(p.numel() for p in model.parameters())
  res["param_dtype"] = str(next(model.parameters()).dtype)
  opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), eps=1e-8,
                          weight_decay=0.1, fused=dev.type == "cuda")
  res["init_s"] = time.perf_counter() - t0

  real = info["real_tokens"]
  ids_np = batch["input_ids"][0, :real].astype(np.int64)
  n_patches = info["patches"]
  pages = info["pages"]
  grid = TINY["page_grid"] if tiny else PAGE_GRID
  ids = torch.from_numpy(ids_np)[None].to(dev)
  mm = (ids == cfg.image_token_id).to(torch.int32)
  pv = torch.from_numpy(np.asarray(batch["patches"][0, :n_patches], np.float32)).to(dev, pdtype)
  thw = torch.tensor([list(grid)] * pages, dtype=torch.long, device=dev)
  pos_np = np.flatnonzero(batch["loss_mask"][0, :real])
  ans = torch.from_numpy(pos_np).to(dev)
  tgt = torch.from_numpy(batch["targets"][0, pos_np].astype(np.int64)).to(dev)
  backends = {"cudnn": [SDPBackend.CUDNN_ATTENTION], "flash": [SDPBackend.FLASH_ATTENTION],
              "efficient": [SDPBackend.EFFICIENT_ATTENTION], "math": [SDPBackend.MATH]}[backend]
  autocast = (torch.autocast(dev.type, dtype=torch.bfloat16) if dtype == "fp32"
              else torch.autocast(dev.type, enabled=False))

  def step():
    with sdpa_kernel(backends):
      with autocast:
        out = model.model(input_ids=ids, pixel_values=pv, image_grid_thw=thw, mm_token_type_ids=mm,
                          use_cache=False)
        h = out.last_hidden_state[0, ans]
        logits = model.lm_head(h).float()
        loss = torch.nn.functional.cross_entropy(logits, tgt)
      loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss

  warmup, steps = (1, 1) if "quick" in opts else (1, 3)
  times = []
  for i in range(warmup + steps):
    if dev.type == "cuda":
      torch.cuda.synchronize()
    t0 = time.perf_counter()
    loss = step()
    lv = float(loss.item())
    if dev.type == "cuda":
      torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    if i >= warmup:
      times.append(dt)
    print(f"  hf L={length} {backend}/{dtype} step {i}: {dt:.3f}s loss={lv:.4f}", flush=True)
  if "prof" in opts and dev.type == "cuda":
    try:
      res["profile"] = _kernel_time(step)
    except Exception as e:  # noqa: BLE001  (the timed steps above still count)
      res["profile"] = {"error": repr(e)[:300]}
  res["step_times"] = times
  res["step_s"] = _median(times)
  res["loss"] = lv
  res["loss_tokens"] = int(len(pos_np))
  if dev.type == "cuda":
    res["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    res["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
  res["status"] = "ok"
  return res


def _kernel_time(step) -> dict:
  """One more step under torch.profiler: summed CUDA kernel time against the wall time (a
  gap means the GPU waited for the host), and the kernels that take the most."""
  import torch
  from torch.profiler import ProfilerActivity, profile
  torch.cuda.synchronize()
  t0 = time.perf_counter()
  with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    step()
    torch.cuda.synchronize()
  wall = time.perf_counter() - t0
  # Kernels only: an aten op's own device time repeats its kernels'.
  kernels = [e for e in prof.key_averages()
             if e.device_type == torch.autograd.DeviceType.CUDA and e.self_device_time_total > 0]
  busy = sum(e.self_device_time_total for e in kernels) / 1e6
  top = sorted(kernels, key=lambda e: -e.self_device_time_total)[:8]
  return {"wall_s": wall, "gpu_kernel_s": busy, "launches": sum(e.count for e in kernels),
          "top": [(e.key[:90], e.self_device_time_total / 1e6, e.count) for e in top]}
