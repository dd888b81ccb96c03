"""Step metrics: console lines, WORKDIR/metrics.jsonl, TensorBoard events and (optionally) W&B.

MFU = model FLOPs per second per device / peak dense bf16 FLOP/s of the device
(model FLOPs as in `mmprolong_jax.flops`; peaks from the vendor datasheets, overridable with the
MMPROLONG_PEAK_TFLOPS environment variable, e.g. with a measured matmul ceiling).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np
import psutil

# Dense bf16 peak TFLOP/s per device by device_kind prefix.
PEAK_TFLOPS = {"NVIDIA H100": 989.0, "NVIDIA H200": 989.0, "NVIDIA H20": 148.0,
               "NVIDIA A100": 312.0, "TPU v5p": 459.0, "TPU v5 lite": 197.0, "TPU v4": 275.0,
               "TPU v6": 918.0}


def peak_tflops() -> float | None:
  if "MMPROLONG_PEAK_TFLOPS" in os.environ:
    return float(os.environ["MMPROLONG_PEAK_TFLOPS"])
  kind = jax.devices()[0].device_kind
  return next((v for k, v in PEAK_TFLOPS.items() if kind.startswith(k)), None)


def device_memory_gib() -> float | None:
  stats = jax.local_devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else peak / 2**30


def summarize(m: dict, *, step: int, lr: float, seconds: float, flops: float, tokens: int,
              n_devices: int, task_names: list[str]) -> dict:
  """Host-side scalars from the last step's device metrics and the interval's totals."""
  out = {"loss": float(m["loss"]), "grad_norm": float(m["grad_norm"]), "lr": lr,
         "loss_tokens": int(m["loss_tokens"]), "step_time_s": seconds,
         "tokens_per_s": tokens / max(seconds, 1e-9),
         "model_tflops_per_device": flops / max(seconds, 1e-9) / n_devices / 1e12,
         "host_rss_gib": psutil.Process().memory_info().rss / 2**30}
  peak = peak_tflops()
  if peak:
    out["mfu"] = out["model_tflops_per_device"] / peak
  mem = device_memory_gib()
  if mem is not None:
    out["device_peak_gib"] = mem
  if "task_loss_sum" in m:
    sums, counts = np.asarray(m["task_loss_sum"]), np.asarray(m["task_tokens"])
    for name, s, c in zip(task_names, sums, counts):
      if c > 0:
        out[f"loss/{name}"] = float(s / c)
  return out


class MetricsWriter:

  def __init__(self, workdir: Path, wandb_project: str | None = None):
    self.enabled = jax.process_index() == 0
    self.tb = self.wandb = None
    if not self.enabled:
      return
    from tensorboardX import SummaryWriter
    self.tb = SummaryWriter(str(Path(workdir) / "tensorboard"))
    self.jsonl = open(Path(workdir) / "metrics.jsonl", "a")
    if wandb_project:
      import wandb  # optional; install it to use
      self.wandb = wandb.init(project=wandb_project, dir=str(workdir), resume="allow")

  def write(self, step: int, scalars: dict):
    if not self.enabled:
      return
    keys = ("loss", "grad_norm", "lr", "tokens_per_s", "model_tflops_per_device", "mfu",
            "step_time_s", "device_peak_gib")
    line = " ".join(f"{k}={scalars[k]:.4g}" for k in keys if k in scalars)
    print(f"step {step}: {line}", flush=True)
    for k, v in scalars.items():
      self.tb.add_scalar(k, v, step)
    self.tb.flush()
    self.jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
    self.jsonl.flush()
    if self.wandb is not None:
      self.wandb.log(scalars, step=step)

  def close(self):
    if self.tb is not None:
      self.tb.close()
      self.jsonl.close()
    if self.wandb is not None:
      self.wandb.finish()
