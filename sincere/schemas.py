"""Every CSV that flows between stages (SPEC sections 2 and 3): its columns, in order, and the
dtype each is read with, in one place. The writers write these columns (``sincere.files``), the
readers read them with these dtypes (``sincere.runs.rundirs``, ``sincere.profiles``), and the
SPEC notes' tables are this module's. A number that may be missing (an empty cell) is read as
float64; a flag (``sla_met``, ``oom``) as text, since an empty cell is not False.
"""

from __future__ import annotations

TEXT, NUMBER = "str", "float64"

# requests.csv: one row per request the server received (or the simulator replayed).
REQUEST_SCHEMA = {
    "request_id": TEXT, "model": TEXT, "arrival_s": NUMBER, "dispatch_s": NUMBER,
    "start_s": NUMBER, "end_s": NUMBER, "batch_id": NUMBER, "batch_size": NUMBER,
    "queue_wait_s": NUMBER, "swap_wait_s": NUMBER, "processing_s": NUMBER, "latency_s": NUMBER,
    "sla_s": NUMBER, "sla_met": TEXT, "status": TEXT, "prompt_tokens": NUMBER,
    "output_tokens": NUMBER,
}
# batches.csv: one row per batch (a failed load is a batch that swapped and processed nothing).
BATCH_SCHEMA = {
    "batch_id": TEXT, "model": TEXT, "batch_size": NUMBER, "reason": TEXT, "dispatch_s": NUMBER,
    "swap_from": TEXT, "swap_s": NUMBER, "start_s": NUMBER, "end_s": NUMBER,
    "processing_s": NUMBER, "output_tokens": NUMBER, "retries": NUMBER,
}
# client.csv: one row per request the generator sent.
CLIENT_SCHEMA = {
    "request_id": TEXT, "model": TEXT, "scheduled_s": NUMBER, "sent_s": NUMBER,
    "received_s": NUMBER, "client_latency_s": NUMBER, "http_status": NUMBER, "error": TEXT,
    "output_tokens": NUMBER,
}
# monitor.csv: one row per sample.
MONITOR_SCHEMA = {
    "t_s": NUMBER, "epoch_s": NUMBER, "cpu_pct": NUMBER, "ram_used_gib": NUMBER,
    "gpu_util_pct": NUMBER, "gpu_mem_util_pct": NUMBER, "gpu_mem_used_gib": NUMBER,
    "gpu_power_w": NUMBER, "sm_clock_mhz": NUMBER, "temperature_c": NUMBER,
}
# schedule.csv: the arrival schedule, one row per request to send.
SCHEDULE_SCHEMA = {"request_id": TEXT, "scheduled_s": NUMBER, "model": TEXT, "prompt_id": TEXT,
                   "prompt_tokens": NUMBER}

REQUEST_COLUMNS = list(REQUEST_SCHEMA)
BATCH_COLUMNS = list(BATCH_SCHEMA)
CLIENT_COLUMNS = list(CLIENT_SCHEMA)
MONITOR_COLUMNS = list(MONITOR_SCHEMA)
SCHEDULE_COLUMNS = list(SCHEDULE_SCHEMA)

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
