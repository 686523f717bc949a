"""``moeopt size``: the fewest GPUs serving a request rate within the SLOs, aggregated and
disaggregated.

Aggregated: the allowed GPU counts in increasing order; on each, the knob groups of every
configuration (``costs.serving.search.prepared_groups``). A group is judged by its widest
knob tuple (the group's highest goodput: B only caps the running requests), and meeting the
SLOs is monotone in the rate (goodput >= R exactly when the SLOs hold at R). So a group is
ruled out at once when ``disagg_decode.decode_rate_bound`` (the decode side within the TPOT
SLO, cheap) is below R, and otherwise by ONE prediction of its widest tuple at R (which also
says whether R has a steady state at all); no goodput or sustainable-rate search is needed.
Groups are tried highest decode bound first (ties in the prepared order). The first count
with a group serving R is the answer, proven fewest when every smaller allowed count was
ruled out completely; what each group was seen to serve or miss is kept across rates
(``--rate-range``). Out of time, the answer is "unknown" from the first count not examined
completely.

Disaggregated: ``cpsat.disagg_size`` (one CP-SAT model per rate).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from optimizer.costs.serving.candidates import ServiceCandidate, evaluate_group
from optimizer.costs.serving.disagg_decode import decode_rate_bound
from optimizer.costs.serving.metrics import ServiceLoad, Slo, meets_at, sustainable_rps
from optimizer.costs.serving.replica import service_degrees, service_load
from optimizer.costs.serving.search import prepared_groups
from optimizer.cpsat.service_solve import placements
from optimizer.inputs.schema import Instance
from optimizer.plan.service import service_slo
from optimizer.search.sweep import with_gpus


@dataclass
class _Group:
    deg: object
    knobs: list
    rep: object
    decode_bound_rps: float  # decode_rate_bound of the widest tuple (cheap): bound_rps <= it
    bound_rps: float | None = None  # AggSizer._bound, computed only to explain an infeasible rate
    serves_up_to: float = 0.0  # the largest rate seen to meet every SLO (widest knobs)
    fails_from: float = float("inf")  # the smallest rate seen to miss one

    @property
    def widest(self):
        return max(self.knobs, key=lambda k: k.max_running_requests)


@dataclass
class AggSize:
    """The aggregated answer for one rate."""

    rate_rps: float
    num_gpus: int | None
    status: str  # "optimal" | "infeasible" | "unknown"
    candidate: ServiceCandidate | None
    ruled_out: list[int] = field(default_factory=list)  # allowed counts proven too few
    unexamined_from: int | None = None  # the first count the time limit left unexamined


def _decode_bound_rps(rep, widest, load: ServiceLoad, slo: Slo) -> float:
    """The decode side's rate within the TPOT SLO (``disagg_decode.decode_rate_bound``)."""
    context = load.decode_context_tokens

    def step(decodes: int) -> int:
        return rep.step_ns(widest, 0, decodes, context)
    return decode_rate_bound(step, rep.queues, load.output_tokens, widest.max_running_requests, slo.max_tpot_ms)


class AggSizer:
    """Per allowed count, the knob groups with their bounds (built on first use, kept)."""

    def __init__(self, inst: Instance, allowed_gpus: list[int], trace=None):
        self.inst = inst
        self.allowed = sorted(allowed_gpus)
        self.load, self.slo = service_load(inst.workload, trace), service_slo(inst)
        self.groups: dict[int, list[_Group]] = {}
        self.loads, self.ranks = placements(inst, sorted({d.ep for d in service_degrees(inst, self.allowed[0])}))

    def _groups(self, gpus: int) -> list[_Group]:
        if gpus not in self.groups:
            inst = with_gpus(self.inst, gpus)
            degrees = service_degrees(inst, gpus)
            missing = sorted({d.ep for d in degrees} - set(self.ranks))
            if missing:
                _, more = placements(inst, missing)
                self.ranks.update(more)
            prepared, _ = prepared_groups(inst, gpus, self.load, self.loads, self.ranks, degrees)
            self.groups[gpus] = [
                _Group(deg, knobs, rep,
                       _decode_bound_rps(rep, max(knobs, key=lambda k: k.max_running_requests), self.load, self.slo))
                for deg, knobs, rep in prepared]
        return self.groups[gpus]

    def _bound(self, group: _Group) -> float:
        """Upper bound on the goodput of a knob group: the widest tuple's sustainable rate
        (goodput needs a steady state, and B only caps the running decodes, so no tuple of
        the group sustains more) and its decode rate bound."""
        if group.bound_rps is None:
            group.bound_rps = min(sustainable_rps(group.rep, group.widest, self.load), group.decode_bound_rps)
        return group.bound_rps

    def bound_rps(self, gpus: int, deadline: float | None = None) -> float:
        """An upper bound on the aggregated goodput on ``gpus`` GPUs: the largest group bound
        (``_bound``). Groups are visited highest decode bound first; one whose decode bound is
        at most the best found cannot raise it. Past ``deadline`` (time.monotonic()) the
        decode bound of the first group not visited stands in for the rest (still a bound)."""
        best = 0.0
        for group in sorted(self._groups(gpus), key=lambda g: -g.decode_bound_rps):
            if group.decode_bound_rps <= best:
                break
            if deadline is not None and time.monotonic() > deadline:
                return group.decode_bound_rps
            best = max(best, self._bound(group))
        return best

    def _ranked(self, gpus: int, rate_rps: float) -> list[_Group]:
        """The groups that may serve ``rate_rps``: those whose decode bound reaches it,
        highest decode bound first (ties in the prepared order). Every other group's goodput
        is below the rate (``decode_rate_bound`` bounds it)."""
        live = [g for g in self._groups(gpus) if g.decode_bound_rps >= rate_rps]
        return sorted(live, key=lambda g: -g.decode_bound_rps)

    def _meets(self, group: _Group, rate_rps: float) -> bool:
        """Whether the group's widest knobs meet every SLO at ``rate_rps``: one prediction
        (meeting the SLOs is monotone in the rate, so goodput >= rate exactly when it holds);
        the widest tuple has the group's highest goodput (B only caps the running requests)."""
        if rate_rps <= group.serves_up_to:
            return True
        if rate_rps >= group.fails_from:
            return False
        ok = meets_at(group.rep, group.widest, self.load, rate_rps, self.slo)
        if ok:
            group.serves_up_to = rate_rps
        else:
            group.fails_from = rate_rps
        return ok

    def _serves(self, gpus: int, rate_rps: float, out_of_time) -> tuple[_Group | None, bool]:
        """(a group serving the rate on ``gpus`` GPUs, examined completely?)."""
        for group in self._ranked(gpus, rate_rps):  # no other group can serve the rate
            if out_of_time():
                return None, False
            if self._meets(group, rate_rps):
                return group, True
        return None, True

    def size(self, rate_rps: float, deadline: float) -> AggSize:
        """The fewest allowed GPUs serving ``rate_rps`` (``deadline``: time.monotonic())."""
        out = AggSize(rate_rps, None, "infeasible", None)

        def out_of_time() -> bool:
            return time.monotonic() > deadline
        for gpus in self.allowed:
            if out_of_time() and gpus not in self.groups:
                out.status, out.unexamined_from = "unknown", gpus
                return out
            found, complete = self._serves(gpus, rate_rps, out_of_time)
            if found is not None:
                out.num_gpus = gpus
                out.candidate = evaluate_group(found.deg, [found.widest], found.rep, self.load, self.slo,
                                               rate_rps)[0]
                out.status = "optimal" if not out.unexamined_from else "feasible"
                return out
            if not complete:
                out.status, out.unexamined_from = "unknown", gpus
                return out
            out.ruled_out.append(gpus)
        return out


# ----------------------------------------------------------------------------------------------
# Both modes over the rates asked (what ``moeopt size`` prints)


def _degrees_text(d) -> str:
    return f"tp{d.tp} pp{d.pp} dp{d.dp} ep{d.ep}"


def agg_entry(inst: Instance, sizer: AggSizer, answer: AggSize) -> dict:
    """The JSON entry of the aggregated answer, with its plan evaluated at the rate."""
    from optimizer.costs.layout import megatron_layout
    from optimizer.costs.serving.replica import even_stages
    from optimizer.plan.evaluate import Plan
    from optimizer.plan.service import evaluate_service_plan, peak_memory_bytes, service_plan_to_json
    entry: dict = {"num_gpus": answer.num_gpus, "status": answer.status,
                   "ruled_out_gpus": answer.ruled_out[-1] if answer.ruled_out else None,
                   "unexamined_from_gpus": answer.unexamined_from}
    if answer.candidate is None:
        return entry
    gpus, c = answer.num_gpus, answer.candidate
    at = with_gpus(inst, gpus)
    at = at.model_copy(update={"workload": at.workload.model_copy(update={"arrival_rate_rps": answer.rate_rps})})
    deg = c.deg
    placement = {l: tuple(tuple(sorted(r)) for r in sizer.ranks[deg.ep][i]) for i, l in enumerate(at.model.moe_layer_ids)}
    plan = Plan(at.name, deg, even_stages(at.model.num_layers, deg.pp), placement,
                megatron_layout(deg, at.hardware.gpus_per_node))
    cand = evaluate_service_plan(at, plan, c.knobs, sizer.load)
    memory = peak_memory_bytes(at, plan, c.knobs, sizer.load)
    doc = service_plan_to_json(plan, cand, memory, answer.status, {"status": answer.status, "objective_name": "gpus"})
    m = doc["metrics"]
    entry.update({"goodput_rps": m["goodput_rps"], "goodput_rps_per_gpu": m["goodput_rps_per_gpu"],
                  "ttft_p90_s": m["ttft_p90_s"], "tpot_p90_ms": m["tpot_p90_ms"],
                  "shape": f"{_degrees_text(deg)} B{c.knobs.max_running_requests} C{c.knobs.prefill_chunk_tokens}",
                  "plan": doc})
    return entry


def disagg_entry(inst: Instance, answer) -> dict:
    from optimizer.plan.pools import disagg_plan_to_json
    entry: dict = {"num_gpus": answer.num_gpus, "status": answer.status, "bound_gpus": answer.bound_gpus}
    if answer.evaluation is None:
        return entry
    ev = answer.evaluation
    phase = answer.choice.phases[0]
    entry["gap"] = phase.gap
    solver = {"status": answer.status, "objective_name": "gpus", "objective": phase.value, "bound": phase.bound,
              "gap": phase.gap, "wall_s": round(answer.wall_s, 3)}
    doc = disagg_plan_to_json(inst.name, ev, answer.status, solver)
    m = doc["metrics"]
    shape = " + ".join(f"{p.role[0].upper()} {p.replicas}x({_degrees_text(p.plan.deg)})" for p in (ev.prefill, ev.decode))
    entry.update({"goodput_rps": m["goodput_rps"], "goodput_rps_per_gpu": m["goodput_rps_per_gpu"],
                  "ttft_p90_s": m["ttft_p90_s"], "tpot_p90_ms": m["tpot_p90_ms"], "shape": shape, "plan": doc})
    return entry


def size_rows(inst: Instance, instance_path: str, rates: list[float], allowed: list[int],
              max_replica_gpus: int | None, mode: str, time_limit_s: float, workers: int, seed: int) -> list[dict]:
    """``{"rate_rps", "agg": {...}, "disagg": {...}, "why_not"}`` per rate (module doc).
    The time limit bounds the aggregated scans (40 % of it first, then disaggregated sizing,
    then the aggregated rates still unknown with what is left, then the bound quoted for a
    rate no count serves, with at least a tenth of the limit) and each CP-SAT solve; the
    disaggregated candidate enumeration itself is not interrupted."""
    from optimizer.cpsat.disagg_size import DisaggSizer
    from optimizer.inputs.service import load_trace
    start = time.monotonic()
    deadline = start + time_limit_s
    trace = load_trace(inst.workload, instance_path)
    rows = [{"rate_rps": r} for r in rates]
    agg = AggSizer(inst, allowed, trace) if mode in ("agg", "both") else None
    if agg is not None and mode == "both":  # a first share of the time for agg, then disagg
        for row in rows:
            row["agg"] = agg.size(row["rate_rps"], start + 0.4 * time_limit_s)
    if mode in ("disagg", "both"):
        replica_cap = max_replica_gpus or 4 * inst.hardware.gpus_per_node
        sizer = DisaggSizer(inst, allowed, replica_cap, trace, rates)
        for row in rows:
            answer = sizer.size(row["rate_rps"], max(0.05, deadline - time.monotonic()), workers, seed)
            row["disagg"] = disagg_entry(inst, answer)
    if agg is not None:
        for row in rows:
            answer = row.get("agg")
            if answer is None or answer.status == "unknown":  # the rest of the time (cached groups)
                answer = agg.size(row["rate_rps"], deadline)
            row["agg"] = agg_entry(inst, agg, answer)
        top = allowed[-1]
        for row in rows:
            if row["agg"]["num_gpus"] is None and row["agg"]["status"] == "infeasible":
                bound = agg.bound_rps(top, max(deadline, time.monotonic() + 0.1 * time_limit_s))
                row["why_not"] = (f"no allowed count up to {top} GPUs serves it: aggregated goodput on "
                                  f"{top} GPUs <= {bound:.4g} requests/s (bound)")
    for row in rows:
        if "disagg" in row and row["disagg"]["num_gpus"] is None and row["disagg"]["status"] == "infeasible":
            row["why_not"] = (row.get("why_not", f"no allowed count up to {allowed[-1]} GPUs serves it")
                              + "; disaggregated: CP-SAT proved no pair of pools on the allowed counts reaches it")
    return rows
