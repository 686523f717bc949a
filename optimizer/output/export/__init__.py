"""Export a plan to the files a runtime consumes: SGLang, vLLM, TensorRT-LLM, Megatron-Core, CSV.

The plan is read by the ONE plan reader (``optimizer.plan.files``), which gives per MoE layer a
list of physical expert slots whose entries are logical expert ids, the slots of EP rank r being
the contiguous block ``[r*S, (r+1)*S)`` with ``S = slots / ep``. A logical id that appears k
times has k replicas (``redundant_experts = slots - experts``). Dense layers (an instance's
non-MoE layers, a plan's ``dense_layers``) carry no experts.

How a moeopt plan maps (per pipeline stage the same ``tp*dp`` GPUs are attention TP x DP and MoE
ETP x EP x EDP, Megatron order, TP and ETP fastest):

* EDP > 1 means ``edp`` independent copies of the EP x ETP expert group. Serving runtimes have
  no EDP inside one server, so each copy becomes one *instance* (a separate server) of
  ``tp`` x ``dp/edp`` attention GPUs per stage; this needs every attention TP group inside one
  copy (``ep*etp`` a multiple of ``tp``), else the plan is not expressible (exit 2).
* Inside an instance the MoE spans all ``T = tp*dp_i`` GPUs of a stage as EP x ETP.

Modules: ``common`` (instances, seats, results, launch.sh/README text, writing), one module per
runtime. Every exporter checks the runtime's own rules and raises ``InputError`` (exit 2, one
line) when the plan cannot be expressed; what it can express only approximately becomes a
warning that is printed and written to the README.
"""

from __future__ import annotations

from pathlib import Path

from optimizer.errors import InputError
from optimizer.output.export.common import Export, Launch, write_export
from optimizer.output.export.csv import experts_compact, export_csv, parse_compact
from optimizer.output.export.launch_settings import RUNTIME_VERSIONS, LaunchSettings, launch_settings
from optimizer.output.export.megatron import export_megatron, megatron_pipeline_args
from optimizer.output.export.sglang import export_sglang, sglang_map_json
from optimizer.output.export.trtllm import export_trtllm, trtllm_yaml
from optimizer.output.export.vllm import export_vllm, hot_over_mean, rank_loads, vllm_linear
from optimizer.plan.files import ExpertMap, PlanData, load_plan, plan_from_doc

FORMATS = ("sglang", "vllm", "trtllm", "megatron", "csv")
RUNTIMES = ("sglang", "vllm", "trtllm")   # the serving runtimes (launch settings, versions)
ExportPlan = PlanData   # the name this package used before the one plan reader

__all__ = ["FORMATS", "RUNTIMES", "RUNTIME_VERSIONS", "Export", "ExportPlan", "ExpertMap",
           "Launch", "LaunchSettings", "launch_settings", "PlanData", "experts_compact",
           "export", "hot_over_mean", "load_plan", "megatron_pipeline_args", "parse_compact",
           "plan_from_doc", "rank_loads", "sglang_map_json", "trtllm_yaml", "vllm_linear",
           "write_export"]


def export(p: PlanData, fmt: str, out_dir: Path, loads=None, inst=None) -> Export:
    """The files and launch commands of ``fmt`` for plan ``p``; InputError when the runtime
    cannot express the plan. ``loads`` (vLLM): expert loads per MoE layer, from an instance.
    ``inst`` (the plan's Instance): the serving runtimes get the settings the plan's figures
    assume (``launch_settings``); without it they are left at the runtime's defaults, with a
    warning."""
    serving = launch_settings(p, inst) if inst is not None and fmt in RUNTIMES else None
    if fmt == "sglang":
        return export_sglang(p, out_dir, serving)
    if fmt == "vllm":
        return export_vllm(p, out_dir, loads, serving)
    if fmt == "trtllm":
        return export_trtllm(p, out_dir, serving)
    if fmt == "megatron":
        return export_megatron(p, out_dir)
    if fmt == "csv":
        return export_csv(p, out_dir)
    raise InputError(f"--to={fmt!r}: expected one of {', '.join(FORMATS)}")
