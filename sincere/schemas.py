"""Column lists of every CSV that flows between stages (SPEC section 2 and 3), in one place."""

from __future__ import annotations

REQUEST_COLUMNS = [
    "request_id", "model", "arrival_s", "dispatch_s", "start_s", "end_s", "batch_id",
    "batch_size", "queue_wait_s", "swap_wait_s", "processing_s", "latency_s", "sla_s",
    "sla_met", "status", "prompt_tokens", "output_tokens",
]

BATCH_COLUMNS = [
    "batch_id", "model", "batch_size", "reason", "dispatch_s", "swap_from", "swap_s",
    "start_s", "end_s", "processing_s", "output_tokens", "retries",
]

CLIENT_COLUMNS = [
    "request_id", "model", "scheduled_s", "sent_s", "received_s", "client_latency_s",
    "http_status", "error", "output_tokens",
]

MONITOR_COLUMNS = [
    "t_s", "epoch_s", "cpu_pct", "ram_used_gib", "gpu_util_pct", "gpu_mem_util_pct",
    "gpu_mem_used_gib", "gpu_power_w", "sm_clock_mhz", "temperature_c",
]

SCHEDULE_COLUMNS = ["request_id", "scheduled_s", "model", "prompt_id", "prompt_tokens"]

LOADING_PROFILE_COLUMNS = [
    "model", "size_gb", "dtype", "load_mean_s", "load_std_s", "unload_mean_s", "unload_std_s",
    "iterations", "device", "cc_mode",
]

BATCH_PROFILE_COLUMNS = [
    "model", "batch_size", "run", "max_new_tokens", "prompt_tokens_mean", "processing_time_s",
    "throughput_rps", "output_tokens_per_s", "peak_gpu_mem_gib", "oom",
]

REQUEST_STATUSES = ("ok", "rejected", "failed", "unserved", "shed")
BATCH_REASONS = ("full", "timer", "partial", "drain", "immediate")
