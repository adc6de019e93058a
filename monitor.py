"""Sample CPU, RAM and GPU into a CSV until Ctrl-C (or for a fixed time).

Prints the environment and the confidential-computing mode first. The server runs the same
sampler inside itself for each run; this script is for watching a machine by hand.
"""

import signal
import sys
import time

from sincere.cli import parse_constants
from sincere.host.environment import environment_block, format_environment
from sincere.host.monitor import Monitor

OUT = "monitor.csv"        # where the samples go
PERIOD_S = 0.5             # sampling period in seconds
DURATION_S = 0.0           # stop after this many seconds (0 = until Ctrl-C)
GPU_INDEX = 0              # which GPU NVML reads


def main() -> None:
    """Print the environment, then sample until the duration passes or Ctrl-C / SIGTERM."""
    cfg = parse_constants(globals())
    print(format_environment(environment_block(gpu_index=cfg.GPU_INDEX)), flush=True)
    # SIGTERM (from a parent process) ends the run like Ctrl-C, so the CSV is closed cleanly.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    monitor = Monitor(cfg.OUT, period_s=cfg.PERIOD_S, gpu_index=cfg.GPU_INDEX)
    print(f"sampling every {cfg.PERIOD_S} s into {cfg.OUT}"
          + (f" for {cfg.DURATION_S} s" if cfg.DURATION_S > 0 else " until Ctrl-C"), flush=True)
    try:
        with monitor:
            if cfg.DURATION_S > 0:
                time.sleep(cfg.DURATION_S)
            else:
                while True:
                    time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        print(f"wrote {monitor.sample_count} samples to {cfg.OUT}", flush=True)


if __name__ == "__main__":
    main()
