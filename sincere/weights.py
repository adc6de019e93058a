"""A model's weights packed in one host buffer per dtype, moved to the device in one copy.

A swap is then one large host-to-device copy (at close to PCIe bandwidth from pinned memory)
instead of hundreds of small ones, and the module object itself is kept: its tensors are
re-pointed (``tensor.data = view``) into the device buffer on load and back into the host
buffer on unload. Keeping the module keeps whatever was compiled for it (torch.compile) valid
across swaps; no skeleton is rebuilt and no Python object changes identity, so aliases of a
tensor (tied weights, rotary buffers kept under two names) stay aliases.

Where pinned memory is not available (confidential computing), the copy from pageable memory
goes in chunks from several threads, each on its own CUDA stream, so that the driver's staging
(and, under CC, its encryption on the CPU) of one chunk overlaps the others.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

ALIGN_BYTES = 256  # every tensor starts on such a boundary in the flat buffers


@dataclass
class Slot:
    """Where one distinct module tensor lives in the flat buffer of its dtype."""

    tensor: torch.Tensor  # the module's own tensor object (a Parameter or a buffer)
    offset: int  # in elements
    shape: torch.Size


@dataclass
class FlatWeights:
    """Every distinct tensor of a module, packed in one host buffer per dtype."""

    host: dict[torch.dtype, torch.Tensor]
    slots: dict[torch.dtype, list[Slot]]
    pinned: bool
    device: dict[torch.dtype, torch.Tensor] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.host.values())

    @property
    def on_device(self) -> bool:
        return bool(self.device)


def _module_tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    """Distinct tensor objects held by the module: parameters, buffers, and plain tensor
    attributes (transformers keeps e.g. ``original_inv_freq`` beside ``inv_freq``)."""
    seen: dict[int, torch.Tensor] = {}
    for sub in module.modules():
        candidates = [*sub._parameters.values(), *sub._buffers.values(),
                      *(v for k, v in vars(sub).items()
                        if isinstance(v, torch.Tensor) and not k.startswith("_"))]
        for tensor in candidates:
            if tensor is not None and not tensor.is_meta:
                seen.setdefault(id(tensor), tensor)
    return list(seen.values())


def pack(module: torch.nn.Module, pin_memory: bool) -> FlatWeights:
    """Copy every tensor of ``module`` into flat host buffers (pinned when asked) and point the
    module's tensors at them; the module's earlier storage (e.g. a memory-mapped file) is freed
    once nothing else holds it."""
    tensors = _module_tensors(module)
    sizes: dict[torch.dtype, int] = {}
    placed: dict[torch.dtype, list[tuple[torch.Tensor, int]]] = {}
    for tensor in tensors:
        align = max(1, ALIGN_BYTES // tensor.element_size())
        start = -(-sizes.get(tensor.dtype, 0) // align) * align
        placed.setdefault(tensor.dtype, []).append((tensor, start))
        sizes[tensor.dtype] = start + tensor.numel()
    host: dict[torch.dtype, torch.Tensor] = {}
    slots: dict[torch.dtype, list[Slot]] = {}
    with torch.no_grad():
        for dtype, entries in placed.items():
            buffer = torch.empty(sizes[dtype], dtype=dtype, pin_memory=pin_memory)
            host[dtype] = buffer
            slots[dtype] = []
            for tensor, offset in entries:
                view = buffer[offset:offset + tensor.numel()].view(tensor.shape)
                view.copy_(tensor.detach())
                tensor.data = view
                slots[dtype].append(Slot(tensor, offset, tensor.shape))
    return FlatWeights(host, slots, pin_memory)


def _copy(dst: torch.Tensor, src: torch.Tensor, non_blocking: bool, threads: int,
          chunk_bytes: int) -> None:
    """dst <- src (1-D, same size); from pageable memory to a GPU, in chunks from threads."""
    if threads <= 1 or dst.device.type != "cuda":
        dst.copy_(src, non_blocking=non_blocking)
        return
    chunk = max(1, chunk_bytes // src.element_size())
    ranges = [(start, min(start + chunk, src.numel())) for start in range(0, src.numel(), chunk)]
    streams = [torch.cuda.Stream(dst.device) for _ in range(threads)]

    def run(k: int) -> None:
        with torch.cuda.stream(streams[k]):
            for start, end in ranges[k::threads]:
                dst[start:end].copy_(src[start:end], non_blocking=non_blocking)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(run, range(threads)))
    for stream in streams:
        stream.synchronize()


def to_device(weights: FlatWeights, device: torch.device, copy_threads: int = 1,
              chunk_bytes: int = 64 * 2**20) -> None:
    """Copy the flat buffers to ``device`` and point the module's tensors there. On a CPU
    device this is a real copy too, so that a swap costs what it costs."""
    with torch.no_grad():
        for dtype, host in weights.host.items():
            target = torch.empty_like(host, device=device)
            _copy(target, host, weights.pinned, copy_threads, chunk_bytes)
            weights.device[dtype] = target
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        _point(weights, weights.device)


def to_host(weights: FlatWeights) -> None:
    """Point the module's tensors back at the host buffers and drop the device ones."""
    with torch.no_grad():
        _point(weights, weights.host)
    weights.device.clear()


def _point(weights: FlatWeights, buffers: dict[torch.dtype, torch.Tensor]) -> None:
    for dtype, slots in weights.slots.items():
        buffer = buffers[dtype]
        for slot in slots:
            slot.tensor.data = buffer[slot.offset:slot.offset + slot.shape.numel()].view(
                slot.shape)
