"""Peak memory of a training step, counted while the training code itself runs on stand-in tensors (CPU).

The step is `train.train_step` on the model `train` would build (`model.wrap_lora`, `loss.CausalLMLoss`, AdamW,
the LR schedule), run on the CPU with substitutions that keep every tensor's shape, dtype and lifetime and drop
the arithmetic (SkipArithmetic):
- every op on a large tensor (>= 2^16 elements) or on a bf16 / fp16 one returns uninitialized outputs of the
  shape and strides its meta kernel gives (in-place and out= ops return the tensors they write to); small float32
  and integer ops (ids, positions, targets, scalars), views, and ops whose output shape depends on data (boolean
  indexing) run for real; a small result of a skipped op is filled with ones, so that a loss or a norm stays
  finite;
- the frozen weights are zero-stride views of one element, counted at full size.
LiveBytes counts the bytes of every storage an op creates, from creation until Python frees it: what
torch.cuda.max_memory_allocated counts. On a CUDA target (`target="cuda"`) three device behaviours are stood in
(kernels.py): the flash / cuDNN attention kernel (keeps q, k, v, the output and a [B, H, T] fp32 log-sum-exp),
CUDA's fused dropout (a bool mask, where the CPU keeps a float noise tensor), save_on_cpu's effect (a saved tensor
leaves the device and is allocated again when unpacked); AdamW runs its foreach path, as on CUDA, and every
allocation is rounded up to 512 bytes as the caching allocator does. On a CPU target nothing is stood in: the
count is exact (tests/unit/test_plan.py compares it byte for byte with a real float32 step).

Per layer, the same code runs on the same shapes, so the live bytes at any moment inside layer k are an affine
function of the number of layers below and above k. `Segments` records the peak of every segment of the step
(micro-batch, forward / backward / optimizer, and which layer: the first, the second, the second-last, the last,
or the embedding and loss), with what is alive there; simulating 3 and 4 repeats of the layer pattern gives each
segment's peak as a function of the layer count, and the step's peak at the real depth is their maximum
(`extrapolate`; proved equal to a full simulation by test).
"""

from __future__ import annotations

import itertools
import threading
import weakref
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

BIG = 1 << 16
ALIASING = {torch.ops.aten._unsafe_view.default}  # a view whose schema does not say so
CUDA_BLOCK = 512  # the CUDA caching allocator rounds every block up to a multiple of this
# One simulation at a time per process: GpuSemantics swaps module attributes (torch's SDPA and dropout, the
# trainer's offload hook) for its duration.
LOCK = threading.Lock()


# ---------------------------------------------------------------- counting


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of every storage an op returns, from creation until Python frees it, per segment.

    `segment` names the part of the step running now (set by the hooks in `simulate`); for each segment the
    peak of live bytes and, at that peak, every live storage (serial number, bytes, segment it was made in)."""

    def __init__(self, round_to: int = 1, skip: bool = False):
        super().__init__()
        self.round_to, self.skip = round_to, skip  # skip: SkipArithmetic's substitution too, in the same mode
        self.live = self.peak = 0
        self.alive: dict[int, list] = {}  # id(storage) -> [weakref, bytes, serial, segment made in]
        self.serials = itertools.count()
        self.segment = None
        self.peaks: dict = {}  # segment -> [peak bytes, snapshot {serial: (bytes, made in)} or None]
        self._dirty = None  # the segment whose peak was raised since the last snapshot

    def size(self, nbytes: int) -> int:
        r = self.round_to
        return -(-nbytes // r) * r

    def track(self, t, count: bool = True):
        """Count t's storage from now until it is freed (count=False: follow it at 0 bytes)."""
        if isinstance(t, torch.Tensor) and t.device.type == "cpu":
            st = t.untyped_storage()
            key = id(st)
            if key not in self.alive and st.nbytes():
                n = self.size(st.nbytes()) if count else 0
                self.alive[key] = [weakref.ref(st, lambda _, key=key: self.free(key)), n, next(self.serials),
                                   self.segment]
                self.live += n
                self.peak = max(self.peak, self.live)
                seg = self.peaks.setdefault(self.segment, [0, None])
                if self.live > seg[0]:
                    seg[0] = self.live
                    self._dirty = self.segment
        return t

    def free(self, key):
        self.snapshot()  # the moment before a free is where a peak can have been
        entry = self.alive.pop(key, None)
        if entry is not None:
            self.live -= entry[1]

    def snapshot(self):
        if self._dirty is not None:
            seg = self.peaks[self._dirty]
            if seg[0] == self.live:
                seg[1] = {e[2]: (e[1], e[3]) for e in self.alive.values()}
            self._dirty = None

    def serial_of(self, t: torch.Tensor) -> int | None:
        entry = self.alive.get(id(t.untyped_storage()))
        return entry[2] if entry else None

    def enter_segment(self, segment) -> None:
        self.snapshot()
        self.segment = segment

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = skip_call(func, args, kwargs) if self.skip else func(*args, **kwargs)
        if isinstance(out, torch.Tensor):
            self.track(out)
        elif isinstance(out, (tuple, list)):
            for t in out:
                if isinstance(t, torch.Tensor):
                    self.track(t)
        return out


def _leaves(args, kwargs):
    """The tensors among an op's arguments (an aten op's arguments nest one level deep: lists of tensors)."""
    for x in (*args, *kwargs.values()):
        if isinstance(x, torch.Tensor):
            yield x
        elif isinstance(x, (list, tuple)):
            yield from (t for t in x if isinstance(t, torch.Tensor))


def _to_meta(x):
    return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta") if isinstance(x, torch.Tensor) else x


def _meta_kwargs(kwargs: dict) -> dict:
    """kwargs for the op's run on the meta device: tensors as meta tensors, and a `device=` (what `x.to(y)` and
    `type_as` pass to _to_copy) as meta too, else the meta run would copy out of a meta tensor, fail, and the op run
    for real (the output's layout does not depend on the device: the result is made on the CPU either way)."""
    return {
        k: torch.device("meta") if isinstance(v, torch.device) else tree_map(_to_meta, v) for k, v in kwargs.items()
    }


def _written_args(func, args, kwargs):
    """The arguments an in-place or out= op writes to and returns, in the order of its returns."""
    schema = func._schema
    by_set = {}
    for i, a in enumerate(schema.arguments):
        if a.alias_info is not None and a.alias_info.is_write:
            value = kwargs[a.name] if a.name in kwargs else args[i] if i < len(args) else None
            for s in a.alias_info.before_set:
                by_set[s] = value
    outs = [by_set.get(next(iter(r.alias_info.before_set))) if r.alias_info else None for r in schema.returns]
    if not outs:
        return None  # foreach in-place ops return nothing
    return outs[0] if len(outs) == 1 else tuple(outs)


class SkipArithmetic(TorchDispatchMode):
    """Large floating-point ops return uninitialized tensors of the right shape instead of computing (skip_call)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return skip_call(func, args, kwargs or {})


def skip_call(func, args, kwargs):
    """func's result, or for a large (or bf16) op uninitialized tensors of its layout.

    The output layout of an op depends only on the op, its inputs' shapes, strides and dtypes and its other
    arguments, so it is worked out on the meta device once per such signature (META: a layer's ops repeat in
    every layer and chunk)."""
    # bf16 / fp16 arithmetic is slow on most CPUs and its values decide nothing (a bf16 model's control flow
    # reads ids, positions, targets and float32 scalars): it is never run for real, whatever its size.
    if (not any(t.numel() >= BIG or t.dtype in LOW for t in _leaves(args, kwargs)) or func in ALIASING
            or func in VIEWS or _is_view(func)):
        return func(*args, **kwargs)  # small (ids, positions, targets, scalars) or a view: real
    key = _signature(func, args, kwargs)
    layout = META.get(key) if key is not None else None
    if layout is None:
        try:
            meta = func(*tree_map(_to_meta, args), **_meta_kwargs(kwargs))  # shapes checked here too
        except (NotImplementedError, RuntimeError):  # data-dependent shapes (boolean indexing): real
            layout = REAL
        else:
            layout = tree_map(lambda m: (m.shape, m.stride(), m.dtype) if isinstance(m, torch.Tensor) else m, meta)
        if key is not None and len(META) < META_LIMIT:
            META[key] = layout
    if layout is REAL:
        return func(*args, **kwargs)
    if func._schema.is_mutable:
        return _written_args(func, args, kwargs)  # in place / out=: the tensors written stay what they were
    if isinstance(layout, (list, tuple)) and not _is_layout(layout):
        return type(layout)(_empty_like_layout(x) for x in layout) if isinstance(layout, tuple) else \
            [_empty_like_layout(x) for x in layout]
    return _empty_like_layout(layout)


VIEWS: set = set()  # ops whose schema returns a view of an argument (filled as met)
_NOT_VIEWS: set = set()


def _is_view(func) -> bool:
    if func in _NOT_VIEWS:
        return False
    if any(r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns):
        VIEWS.add(func)
        return True
    _NOT_VIEWS.add(func)
    return False


def _is_layout(x) -> bool:
    return isinstance(x, tuple) and len(x) == 3 and isinstance(x[2], torch.dtype)


REAL = object()  # META's mark for an op that has to run for real
LOW = (torch.bfloat16, torch.float16)
META: dict = {}
META_LIMIT = 200_000


def _signature(func, args, kwargs):
    """A hashable key of everything an op's output layout depends on, or None."""
    def sig(x):
        if isinstance(x, torch.Tensor):
            return ("T", tuple(x.shape), x.stride(), x.dtype, x.device.type)
        if isinstance(x, (list, tuple)):
            return tuple(sig(v) for v in x)
        return x
    try:
        key = (func, sig(args), tuple(sorted((k, sig(v)) for k, v in kwargs.items())))
        hash(key)
    except TypeError:
        return None
    return key


FILL = 1 << 12  # a result this small of a large op is filled with ones (a loss, a norm); larger ones stay empty


def _empty_like_layout(layout):
    """A real tensor of the layout (shape, strides, dtype), uninitialized (writing fresh pages costs time) unless it
    is a scalar-like result that a loss or a gradient norm reads: ones keep those finite (log, rsqrt, division)."""
    if not _is_layout(layout):
        return layout
    shape, stride, dtype = layout
    t = torch.empty_strided(shape, stride, dtype=dtype)
    return t.fill_(1) if t.numel() <= FILL else t


# ---------------------------------------------------------------- results


@dataclass
class SegmentPeak:
    bytes: int  # live bytes at the segment's peak (frozen weights included)
    parts: dict[str, int]  # what they are: frozen, lora, grads, optimizer, saved, transient


@dataclass
class Measured:
    """One simulated step: per segment its peak, with the frozen weights counted at full size."""

    peaks: dict  # segment -> SegmentPeak
    frozen: int  # bytes of frozen weights and buffers
    lora: int  # bytes of trainable weights
    layers: int
    counts: dict = field(default_factory=dict)  # parameter counts (decoder linears, LoRA, vocab x hidden)

    @property
    def peak(self) -> SegmentPeak:
        return max(self.peaks.values(), key=lambda p: p.bytes)

    def peak_segment(self):
        return max(self.peaks, key=lambda s: self.peaks[s].bytes)


def classify(tracker: LiveBytes, frozen: int, lora: set, grads: set, states: set) -> dict:
    """Per segment: SegmentPeak with the live bytes at its peak sorted into what they are."""
    out = {}
    for segment, (peak, snap) in tracker.peaks.items():
        parts = {"frozen": frozen, "lora": 0, "grads": 0, "optimizer": 0, "saved": 0, "transient": 0}
        for serial, (n, made_in) in (snap or {}).items():
            kind = ("lora" if serial in lora else "grads" if serial in grads else "optimizer" if serial in states
                    else "transient" if made_in == segment else "saved")
            parts[kind] += n
        out[segment] = SegmentPeak(peak + frozen, parts)
    return out


# ---------------------------------------------------------------- extrapolation

# A middle layer's segments grow with the depth as the outer layer on its side does: the second layer's as the first's
# (the same layers above it, less one), the second-last's as the last's (the same layers below it, less one).
PARTNER = {"low": "first", "high": "last"}


def extrapolate(a: Measured, b: Measured, periods_a: int, periods: int) -> Measured:
    """The step at `periods` repeats of the layer pattern, from simulations at periods_a and periods_a + 1.

    Each segment's peak, and each part of it, is affine in the number of repeats (a segment sees the same layers
    below it, or above it, each alike); the step's peak is the largest segment peak. The middle layers' segments
    exist only in b (periods_a = 2: there is no middle layer in a): their slope is their partner's."""
    k = periods - periods_a - 1  # repeats beyond b

    def slope(seg):
        micro, direction, role = seg
        partner = (micro, direction, (PARTNER[role[0]], role[1])) if role[0] in PARTNER and seg not in a.peaks else seg
        return a.peaks[partner], b.peaks[partner]

    peaks = {}
    for seg, pb in b.peaks.items():
        pa0, pb0 = slope(seg)
        peaks[seg] = SegmentPeak(pb.bytes + k * (pb0.bytes - pa0.bytes),
                                 {p: pb.parts[p] + k * (pb0.parts[p] - pa0.parts[p]) for p in pb.parts})

    def line(x: int, y: int) -> int:
        return y + k * (y - x)

    counts = {c: line(a.counts[c], b.counts[c]) for c in a.counts}
    return Measured(peaks, line(a.frozen, b.frozen), line(a.lora, b.lora), line(a.layers, b.layers), counts)
