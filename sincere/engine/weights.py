"""A model's weights packed in one host buffer per dtype, moved to the device in one copy.

A swap is then one large host-to-device copy (at close to PCIe bandwidth from pinned memory)
instead of hundreds of small ones, and the module object itself is kept: its tensors are
re-pointed (``tensor.data = view``) into the device arena (sincere.engine.arena) on load and back
into the host buffer on unload. Keeping the module keeps whatever was compiled for it
(torch.compile) valid across swaps; no skeleton is rebuilt and no Python object changes identity, so
aliases of a tensor (tied weights, rotary buffers kept under two names) stay aliases. The arena
gives the tensors the same device addresses at every swap.

The host buffers are allocated at their exact size and pinned in place (``cudaHostRegister``),
not through PyTorch's caching host allocator, which rounds every pinned block up to a power of
two (granite's 13.5 GB would take 17.2 GB: see pytorch/pytorch#150517 and the
``pinned_max_round_threshold`` work after it). Where registering is refused (confidential
computing refuses ``cudaHostRegister`` but allows ``cudaHostAlloc``), the caching allocator is
the fallback and the rounding is reported. Three ways to copy (COPY_MODES): from pinned memory in
one copy, from pageable memory in one copy (the driver stages it), or from pageable memory in
chunks from several threads, each on its own CUDA stream, so that the driver's staging (and,
under CC, its encryption on the CPU) of one chunk overlaps the others. Which is fastest on a
machine is measured (sincere.engine.load_paths), not assumed.
"""

from __future__ import annotations

import ctypes
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from sincere.engine.arena import DeviceArena, aligned

COPY_MODES = ("pinned", "pageable", "chunked")
_HOST_REGISTER_PORTABLE = 1  # cudaHostRegisterPortable, as torch.cuda._pin_memory_utils uses


@dataclass
class Slot:
    """Where one distinct module tensor lives in the flat buffer of its dtype."""

    tensor: torch.Tensor  # the module's own tensor object (a Parameter or a buffer)
    offset: int  # in elements
    shape: torch.Size


@dataclass(frozen=True)
class PinReport:
    """How a model's host buffers were pinned: ``how`` is "registered" (exactly ``nbytes``,
    pinned in place), "host_allocator" (copied into PyTorch's pinned blocks, ``reserved_bytes``
    rounded up to powers of two) or "none"; ``seconds`` the time it took."""

    how: str
    nbytes: int
    reserved_bytes: int
    seconds: float


@dataclass
class FlatWeights:
    """Every distinct tensor of a module, packed in one host buffer per dtype."""

    host: dict[torch.dtype, torch.Tensor]
    slots: dict[torch.dtype, list[Slot]]
    pinned: str = ""  # "", "registered" or "host_allocator": see PinReport
    device: dict[torch.dtype, torch.Tensor] = field(default_factory=dict)
    _unpin: weakref.finalize | None = None

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.host.values())

    @property
    def on_device(self) -> bool:
        return bool(self.device)

    def arena_offsets(self) -> tuple[dict[torch.dtype, int], int]:
        """Byte offset of each dtype's buffer in an arena, and the bytes the arena needs:
        always the same layout, so a model lands on the same addresses at every swap."""
        offsets: dict[torch.dtype, int] = {}
        end = 0
        for dtype, buffer in self.host.items():
            offsets[dtype] = end
            end = aligned(end + buffer.numel() * buffer.element_size())
        return offsets, end


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


def pack(module: torch.nn.Module) -> FlatWeights:
    """Copy every tensor of ``module`` (on any device) into flat host buffers of their exact
    size and point the module's tensors at them; the module's earlier storage (a memory-mapped
    file, device memory) is freed once nothing else holds it."""
    tensors = _module_tensors(module)
    sizes: dict[torch.dtype, int] = {}
    placed: dict[torch.dtype, list[tuple[torch.Tensor, int]]] = {}
    for tensor in tensors:
        elements_per_align = max(1, aligned(1) // tensor.element_size())
        start = -(-sizes.get(tensor.dtype, 0) // elements_per_align) * elements_per_align
        placed.setdefault(tensor.dtype, []).append((tensor, start))
        sizes[tensor.dtype] = start + tensor.numel()
    host: dict[torch.dtype, torch.Tensor] = {}
    slots: dict[torch.dtype, list[Slot]] = {}
    with torch.no_grad():
        for dtype, entries in placed.items():
            buffer = torch.empty(sizes[dtype], dtype=dtype)
            host[dtype] = buffer
            slots[dtype] = []
            for tensor, offset in entries:
                view = buffer[offset:offset + tensor.numel()].view(tensor.shape)
                view.copy_(tensor.detach())
                tensor.data = view
                slots[dtype].append(Slot(tensor, offset, tensor.shape))
    return FlatWeights(host, slots)


def _unregister(pointers: list[int]) -> None:
    cudart = torch.cuda.cudart()
    for pointer in pointers:
        cudart.cudaHostUnregister(pointer)


def _clear_cuda_error() -> None:
    """Reset the CUDA runtime's last error after a refused call: PyTorch checks it after each
    kernel launch (``cudaGetLastError``) and would report the refusal as that kernel's error.
    Through the runtime library PyTorch loaded (its symbols are global); nothing if absent."""
    try:
        get_last_error = ctypes.CDLL(None).cudaGetLastError
    except (AttributeError, OSError):
        return
    get_last_error()


def _register(buffers: list[torch.Tensor]) -> bool:
    """Pin each buffer in place at its exact size; False (and none left pinned) if refused."""
    cudart = torch.cuda.cudart()
    done: list[int] = []
    for buffer in buffers:
        status = int(cudart.cudaHostRegister(buffer.data_ptr(),
                                             buffer.numel() * buffer.element_size(),
                                             _HOST_REGISTER_PORTABLE))
        if status != 0:
            _clear_cuda_error()
            _unregister(done)
            return False
        done.append(buffer.data_ptr())
    return True


def pin(weights: FlatWeights) -> PinReport:
    """Pin the host buffers for fast copies to a GPU: registered in place at their exact size,
    else (where that is refused) copied into PyTorch's pinned blocks; "none" without CUDA."""
    nbytes = weights.nbytes
    if weights.pinned or not torch.cuda.is_available():
        return PinReport(weights.pinned or "none", nbytes if weights.pinned else 0, 0, 0.0)
    started_s = time.perf_counter()
    buffers = list(weights.host.values())
    if _register(buffers):
        weights.pinned = "registered"
        weights._unpin = weakref.finalize(weights, _unregister, [b.data_ptr() for b in buffers])
        return PinReport("registered", nbytes, nbytes, time.perf_counter() - started_s)
    reserved = 0
    with torch.no_grad():
        for dtype, buffer in list(weights.host.items()):
            pinned = torch.empty_like(buffer, pin_memory=True)
            pinned.copy_(buffer)
            weights.host[dtype] = pinned
            reserved += 1 << max(0, (pinned.numel() * pinned.element_size() - 1).bit_length())
        _point(weights, weights.host)
    weights.pinned = "host_allocator"
    return PinReport("host_allocator", nbytes, reserved, time.perf_counter() - started_s)


def unpin(weights: FlatWeights) -> None:
    """Undo ``pin``'s registration (the buffers stay, pageable); nothing for the fallback."""
    if weights.pinned == "registered" and weights._unpin is not None:
        weights._unpin()
        weights._unpin = None
        weights.pinned = ""


def _copy(dst: torch.Tensor, src: torch.Tensor, mode: str, threads: int,
          chunk_bytes: int) -> None:
    """dst <- src (1-D, same size) the way ``mode`` says: one copy, or chunks from threads
    (on a GPU each thread on its own CUDA stream; on a CPU plain threads)."""
    if mode != "chunked" or threads <= 1:
        dst.copy_(src, non_blocking=mode == "pinned" and dst.is_cuda)
        return
    chunk = max(1, chunk_bytes // src.element_size())
    ranges = [(start, min(start + chunk, src.numel())) for start in range(0, src.numel(), chunk)]
    streams = None
    if dst.is_cuda:
        streams = [torch.cuda.Stream(dst.device) for _ in range(threads)]
        for stream in streams:  # nothing queued before on the current stream is overtaken
            stream.wait_stream(torch.cuda.current_stream(dst.device))

    def run(k: int) -> None:
        if streams is None:
            for start, end in ranges[k::threads]:
                dst[start:end].copy_(src[start:end])
            return
        with torch.cuda.stream(streams[k]):
            for start, end in ranges[k::threads]:
                dst[start:end].copy_(src[start:end])

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(run, range(threads)))
    for stream in streams or []:
        stream.synchronize()


def to_device(weights: FlatWeights, arena: DeviceArena, mode: str = "pinned",
              copy_threads: int = 4, chunk_bytes: int = 64 * 2**20) -> str:
    """Copy the flat buffers into ``arena`` (grown first if it is too small) and point the
    module's tensors there; the copy mode used, which is "pageable" where "pinned" was asked
    of buffers that are not pinned. On a CPU arena this is a real copy too, so that a swap
    costs what it costs."""
    if mode not in COPY_MODES:
        raise ValueError(f"copy mode must be one of {', '.join(COPY_MODES)}, got {mode!r}")
    used = "pageable" if mode == "pinned" and not weights.pinned else mode
    offsets, needed = weights.arena_offsets()
    arena.ensure(needed)
    with torch.no_grad():
        for dtype, host in weights.host.items():
            target = arena.view(offsets[dtype], dtype, (host.numel(),))
            _copy(target, host, used, copy_threads, chunk_bytes)
            weights.device[dtype] = target
        if arena.device.type == "cuda":
            torch.cuda.synchronize(arena.device)
        _point(weights, weights.device)
    return used


def to_host(weights: FlatWeights) -> None:
    """Point the module's tensors back at the host buffers; the arena keeps its bytes."""
    with torch.no_grad():
        _point(weights, weights.host)
    weights.device.clear()


def _point(weights: FlatWeights, buffers: dict[torch.dtype, torch.Tensor]) -> None:
    for dtype, slots in weights.slots.items():
        buffer = buffers[dtype]
        for slot in slots:
            slot.tensor.data = buffer[slot.offset:slot.offset + slot.shape.numel()].view(
                slot.shape)
