"""One byte buffer on the device, allocated once, from which typed views are cut at fixed offsets.

The weights of whichever model is resident, and the static KV caches, live in arenas: a swap
copies into the same bytes the previous model used, so a model's tensors have the same device
addresses at every swap, nothing is allocated or freed per swap, and CUDA graphs recorded for a
model stay valid (cudagraph trees re-record a graph whose static inputs moved; past
``cudagraph_unexpected_rerecord_limit`` they run without graphs). An arena grows only when asked
for more than it holds, which a caller that reserves for its largest need up front never does;
``allocations`` counts the times it was (re)allocated.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("sincere.engine")

ALIGN_BYTES = 256  # every view starts on such a boundary (any dtype's alignment, CUDA's too)


def aligned(nbytes: int) -> int:
    """``nbytes`` rounded up to the arena's alignment."""
    return -(-nbytes // ALIGN_BYTES) * ALIGN_BYTES


class DeviceArena:
    """A byte buffer on ``device``, (re)allocated only when a larger one is needed."""

    def __init__(self, device: torch.device, name: str) -> None:
        self.device = torch.device(device)
        self.name = name
        self.allocations = 0
        self._buffer: torch.Tensor | None = None

    @property
    def capacity(self) -> int:
        """Bytes held (0 before the first allocation)."""
        return 0 if self._buffer is None else self._buffer.numel()

    @property
    def address(self) -> int | None:
        """The device address of the first byte (None before the first allocation)."""
        return None if self._buffer is None else self._buffer.data_ptr()

    def ensure(self, nbytes: int) -> bool:
        """Hold at least ``nbytes``; True when that took a new allocation (every view cut
        before it is then stale, and whatever was recorded at the old address re-records)."""
        if nbytes <= self.capacity:
            return False
        old_capacity = self.capacity
        self._buffer = None  # the old bytes go back to the allocator before the larger ask
        self._buffer = torch.empty(aligned(nbytes), dtype=torch.uint8, device=self.device)
        self.allocations += 1
        if old_capacity:
            log.warning("%s arena grown from %.3f GB to %.3f GB: device addresses changed",
                        self.name, old_capacity / 1e9, self.capacity / 1e9)
        else:
            log.info("%s arena: %.3f GB on %s", self.name, self.capacity / 1e9, self.device)
        return True

    def view(self, offset_bytes: int, dtype: torch.dtype, shape: tuple[int, ...] | torch.Size
             ) -> torch.Tensor:
        """A ``dtype`` tensor of ``shape`` over the arena's bytes from ``offset_bytes`` (a
        multiple of ALIGN_BYTES)."""
        if self._buffer is None or offset_bytes % ALIGN_BYTES:
            raise ValueError(f"{self.name} arena: no view at offset {offset_bytes}")
        numel = 1
        for size in shape:
            numel *= int(size)
        nbytes = numel * torch.empty((), dtype=dtype).element_size()
        if offset_bytes + nbytes > self.capacity:
            raise ValueError(f"{self.name} arena: {offset_bytes + nbytes} bytes asked, "
                             f"{self.capacity} held")
        raw = self._buffer[offset_bytes:offset_bytes + nbytes]
        return raw.view(dtype).view(tuple(shape))
