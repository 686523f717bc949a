"""Hardware profiles: per-operator efficiencies of one GPU under one runtime (docs/calibration.md).

A profile is a small versioned JSON file (``format_version`` 1) read strictly with pydantic.
Every efficiency is an *achieved fraction of speed of light*: measured time = SOL time / eta,
with SOL time = max(FLOP / peak of the operator's compute type, bytes / HBM bandwidth), both
figures the profile's own (``peak_tflops_by_dtype``, ``hbm_bandwidth_gb_s``). Tables:

- ``gemm``: dense GEMMs of one dtype and weight shape (n, k), eta over m (tokens);
- ``grouped_gemm``: routed-expert GEMMs of one dtype, expert shape (hidden, inter per GPU)
  and experts per GPU, eta over tokens per expert;
- ``attention``: the attention core of one kind (mha, gqa, mla), sliding or not, phase
  (prefill, decode), eta over context tokens (prefill: the prompt length; decode: the KV
  tokens the whole step reads, sequences x context);
- ``collectives``: one operation (all_reduce, all_gather, all_to_all) over one link (intra,
  inter) with a kernel family (nccl, custom, deepep_normal, deepep_ll): a per-message latency
  and eta of the link's bandwidth over message bytes.

Curves are piecewise linear in log2(x), clamped at their ends. Operators with no table use
the instance's flat ``gpu.compute_efficiency`` / ``gpu.hbm_efficiency`` (0.5 / 0.8 unless
the instance says otherwise), so a profile without tables is exactly moeopt's flat model. ``Efficiency`` answers the
cost formulas' questions for one instance; ``efficiency_of(inst)`` is cached per profile.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from optimizer.errors import InputError
from optimizer.inputs.schema import GpuSpec, Instance

PROFILE_DIR = Path(__file__).resolve().parents[1] / "profiles"
FORMAT_VERSION = 1

_MISSING = object()  # a memo entry not computed yet (None is a valid answer)

Eta = Annotated[float, Field(gt=0, le=1.5, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Curve(_Strict):
    """eta at ascending x (tokens, context tokens or bytes); log2-linear in between."""

    x: list[Positive] = Field(..., min_length=1)
    efficiency: list[Eta] = Field(..., min_length=1)

    @model_validator(mode="after")
    def _shape(self) -> Curve:
        if len(self.x) != len(self.efficiency):
            raise ValueError(f"curve has {len(self.x)} x values and {len(self.efficiency)} efficiencies")
        if any(b <= a for a, b in zip(self.x, self.x[1:])):
            raise ValueError("curve x values must be strictly ascending")
        return self

    def at(self, x: float) -> float:
        if x <= self.x[0]:
            return self.efficiency[0]
        if x >= self.x[-1]:
            return self.efficiency[-1]
        lx = math.log2(x)
        for i in range(1, len(self.x)):
            if x <= self.x[i]:
                x0, x1 = math.log2(self.x[i - 1]), math.log2(self.x[i])
                t = (lx - x0) / (x1 - x0)
                return self.efficiency[i - 1] + t * (self.efficiency[i] - self.efficiency[i - 1])
        return self.efficiency[-1]  # pragma: no cover (unreachable: x < x[-1])


class GemmTable(_Strict):
    dtype: Literal["bf16", "fp8", "mxfp4"]
    n: Annotated[int, Field(gt=0)]
    k: Annotated[int, Field(gt=0)]
    over_m: Curve


class GroupedGemmTable(_Strict):
    dtype: Literal["bf16", "fp8", "mxfp4"]
    hidden: Annotated[int, Field(gt=0)]
    inter: Annotated[int, Field(gt=0)] = Field(..., description="expert FFN width on one GPU")
    experts_per_gpu: Annotated[int, Field(gt=0)] = Field(..., description="routed experts one GPU holds")
    over_tokens_per_expert: Curve


class AttentionTable(_Strict):
    kind: Literal["mha", "gqa", "mla"]
    sliding: bool = False
    phase: Literal["prefill", "decode"]
    over_context: Curve


class CollectiveTable(_Strict):
    op: Literal["all_reduce", "all_gather", "all_to_all"]
    link: Literal["intra", "inter"]
    family: Literal["nccl", "custom", "deepep_normal", "deepep_ll"]
    peers: Annotated[int, Field(ge=2)] = Field(..., description="GPUs in the group measured")
    latency_us: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        ..., description="per-message latency (time of the smallest message)")
    over_bytes: Curve


class Provenance(_Strict):
    source: str = Field(..., description="where the timings come from")
    measured_on: str = Field(..., description="GPU and runtime the timings were taken on")
    fitted: str = Field(..., description="date the profile was fitted (YYYY-MM-DD)")
    method: str
    notes: str = ""


class Profile(_Strict):
    format_version: Literal[1]
    name: str
    gpu: str
    runtime: str
    provenance: Provenance
    peak_tflops_by_dtype: dict[str, Positive]
    hbm_bandwidth_gb_s: Positive
    gemm: list[GemmTable] = []
    grouped_gemm: list[GroupedGemmTable] = []
    attention: list[AttentionTable] = []
    collectives: list[CollectiveTable] = []

    @property
    def is_flat(self) -> bool:
        return not (self.gemm or self.grouped_gemm or self.attention or self.collectives)


class ProfileError(InputError):
    """A profile file that cannot be used; the message is one line (exit 2)."""


def read_profile(path: Path) -> Profile:
    """A profile from ``path``; ProfileError (one line naming the field) if it is not valid."""
    import json
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ProfileError(f"hardware.profile={str(path)!r}: cannot read ({exc.strerror})") from None
    except ValueError as exc:
        raise ProfileError(f"hardware.profile={str(path)!r}: not JSON ({exc})") from None
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top)"
        raise ProfileError(f"hardware.profile={str(path)!r}: {where}: {err['msg']}") from None


def profile_path(name_or_path: str) -> Path:
    """A shipped profile's file (``optimizer/profiles/NAME.json``) or the path given."""
    shipped = PROFILE_DIR / f"{name_or_path}.json"
    return shipped if shipped.is_file() else Path(name_or_path)


@lru_cache(maxsize=64)
def load_profile(name_or_path: str) -> Profile:
    return read_profile(profile_path(name_or_path))


def _near(candidates, key):
    """The candidate whose log-shape is nearest ``key`` (a tuple of positive numbers)."""
    def dist(c):
        return sum((math.log2(a) - math.log2(b)) ** 2 for a, b in zip(c[0], key))
    return min(candidates, key=dist)[1] if candidates else None


class Efficiency:
    """Achieved rates of one instance's operators. ``profile`` None = the instance's flat
    ``gpu.compute_efficiency`` / ``hbm_efficiency`` (moeopt's behaviour without profiles).

    Rates are relative to the instance's own ``gpu.peak_tflops`` and HBM bandwidth; an
    operator computing in another type than the weights (attention in bf16 under fp8
    weights) is scaled by the profile's ratio of peaks."""

    def __init__(self, gpu: GpuSpec, profile: Profile | None, compute_dtype: str = "bf16"):
        self.gpu, self.profile, self.compute_dtype = gpu, profile, compute_dtype
        self.flat = profile is None or profile.is_flat
        self.eta_c, self.eta_m = gpu.compute_efficiency, gpu.hbm_efficiency
        self._memo: dict[tuple, object] = {}  # every lookup is pure: answer each once

    # ------------------------------------------------------------ flat defaults
    def flop_rate(self, op_dtype: str | None = None) -> float:
        """Peak FLOP/s of the operator's compute type on this instance's GPU."""
        peak = self.gpu.peak_tflops * 1e12
        if self.profile is None or op_dtype is None:
            return peak
        table = self.profile.peak_tflops_by_dtype
        if op_dtype in table and self.compute_dtype in table:
            return peak * table[op_dtype] / table[self.compute_dtype]
        return peak

    def byte_rate(self) -> float:
        return self.gpu.hbm_bandwidth_gb_s * 1e9

    def flat_s(self, flops: float, num_bytes: float) -> float:
        return max(flops / (self.flop_rate() * self.eta_c), num_bytes / (self.byte_rate() * self.eta_m))

    def sol_s(self, flops: float, num_bytes: float, op_dtype: str | None = None) -> float:
        """Speed-of-light time: max(FLOP / peak, bytes / HBM bandwidth), s."""
        return max(flops / self.flop_rate(op_dtype), num_bytes / self.byte_rate())

    # ------------------------------------------------------------ lookups (None = no table)
    def _cached(self, key: tuple, compute):
        hit = self._memo.get(key, _MISSING)
        if hit is _MISSING:
            hit = self._memo[key] = compute()
        return hit

    def gemm_eta(self, dtype: str, m: float, n: float, k: float) -> float | None:
        if self.flat:
            return None
        return self._cached(("gemm", dtype, m, n, k), lambda: self._gemm_eta(dtype, m, n, k))

    def _gemm_eta(self, dtype, m, n, k):
        def nearest():  # the table depends on the shape (n, k) only: looked up once per shape
            rows = [((t.n, t.k), t) for t in self.profile.gemm if t.dtype == dtype]
            return _near(rows, (max(n, 1), max(k, 1)))
        table = self._cached(("gemm table", dtype, n, k), nearest)
        return table.over_m.at(max(m, 1)) if table else None

    def grouped_eta(self, dtype: str, tokens_per_expert: float, hidden: int, inter: float,
                    experts_per_gpu: int) -> float | None:
        if self.flat:
            return None
        key = ("grouped", dtype, tokens_per_expert, hidden, inter, experts_per_gpu)
        return self._cached(key, lambda: self._grouped_eta(dtype, tokens_per_expert, hidden, inter,
                                                           experts_per_gpu))

    def _grouped_eta(self, dtype, tokens_per_expert, hidden, inter, experts_per_gpu):
        table = self._cached(("grouped_table", dtype, hidden, inter, experts_per_gpu), lambda: _near(
            [((t.hidden, t.inter, t.experts_per_gpu), t) for t in self.profile.grouped_gemm if t.dtype == dtype],
            (hidden, max(inter, 1), max(experts_per_gpu, 1))))  # the table depends on the shape only
        return table.over_tokens_per_expert.at(max(tokens_per_expert, 1e-3)) if table else None

    def attention_eta(self, kind: str, sliding: bool, phase: str, context: float) -> float | None:
        if self.flat:
            return None
        return self._cached(("attention", kind, sliding, phase, context),
                            lambda: self._attention_eta(kind, sliding, phase, context))

    def _attention_eta(self, kind, sliding, phase, context):
        kinds = [kind] + {"mha": ["gqa"], "gqa": ["mha"]}.get(kind, [])
        for want in kinds:
            rows = [t for t in self.profile.attention if t.kind == want and t.phase == phase]
            rows = [t for t in rows if t.sliding == sliding] or rows
            if rows:
                return rows[0].over_context.at(max(context, 1))
        return None

    def collective(self, op: str, link: str, peers: int, num_bytes: float,
                   family: str | None = None) -> tuple[float, float] | None:
        """(per-message latency s, eta of the link bandwidth) for one message, or None."""
        if self.flat:
            return None
        return self._cached(("collective", op, link, peers, num_bytes, family),
                            lambda: self._collective(op, link, peers, num_bytes, family))

    def _collective(self, op, link, peers, num_bytes, family):
        def nearest():  # the table depends on (op, link, peers, family) only
            rows = [((t.peers,), t) for t in self.profile.collectives
                    if t.op == op and t.link == link and (family is None or t.family == family)]
            return _near(rows, (peers,))
        table = self._cached(("collective table", op, link, peers, family), nearest)
        if table is None:
            return None
        return table.latency_us * 1e-6, table.over_bytes.at(max(num_bytes, 1))


def compute_dtype_of(inst: Instance) -> str:
    m = inst.model
    dtype = m.expert_weight_dtype or m.weight_dtype
    return {"fp8": "fp8", "mxfp4": "mxfp4"}.get(dtype, "bf16")


@lru_cache(maxsize=64)
def _efficiency(gpu: GpuSpec, model_json: str, name: str | None, compute_dtype: str) -> Efficiency:
    """One lookup object per (GPU, model, profile): its memo holds model-specific answers."""
    return Efficiency(gpu, load_profile(name) if name else None, compute_dtype)


_BY_INSTANCE: dict[tuple[int, int], tuple[object, object, Efficiency]] = {}


def efficiency_of(inst: Instance) -> Efficiency:
    """The efficiency lookup of ``inst`` (its ``hardware.profile``, else flat); remembered per
    (hardware, model) object, so the cost tables' many calls cost one dict lookup."""
    key = (id(inst.hardware), id(inst.model))
    hit = _BY_INSTANCE.get(key)
    if hit is not None and hit[0] is inst.hardware and hit[1] is inst.model:
        return hit[2]
    if len(_BY_INSTANCE) > 256:
        _BY_INSTANCE.clear()
    eff = _efficiency(inst.hardware.gpu, inst.model.model_dump_json(), inst.hardware.profile,
                      compute_dtype_of(inst))
    _BY_INSTANCE[key] = (inst.hardware, inst.model, eff)
    return eff
