"""Run INSIDE the throwaway runtime environment (``.ci/runtime-parsers``), not moeopt's: loads
exported expert maps with the runtimes' OWN code, on the CPU, and prints what they made of them.

    python tests/tools/expert_location_loader.py sglang CASES.jsonl
    python tests/tools/expert_location_loader.py vllm CASES.jsonl
    python tests/tools/expert_location_loader.py probe      # imports only

SGLang, one case per line ``{"argv": [...], "hf_config": {...}}``: ``argv`` is an exported
``sglang.launch_server`` command after its program words (shell variables already given
values); ``hf_config`` the model's config.json (architecture, layer and expert counts; no
weights are read); ``--device cpu`` is appended. The argv goes through SGLang's own parser and ``ServerArgs`` resolution
(which also refuses flag combinations argparse lets through), the runtime context is published
as a server does, and ``eplb.expert_location.compute_initial_expert_location_metadata`` reads
the ``--init-expert-location`` file as a server does at start. Printed per case:
``physical_to_logical_map``, ``logical_to_all_physical_map`` (padded with -1),
``num_local_physical_experts`` and ``ep_size``; a refusal prints ``{"error": ...}``.

vLLM, one case per line ``{"num_experts": E, "num_redundant": R, "ep": EP}``: vLLM's own
``EplbState.build_initial_global_physical_to_logical_map`` (the start map EPLB moves experts
from) and ``determine_expert_map`` per EP rank (which physical slots a rank holds).

PyPI has no CPU build of torchvision, and SGLang's config package imports it at module level
for image-model constants only; the SGLang path therefore registers an import-only stand-in
(``InterpolationMode``, nothing callable) after transformers has recorded torchvision as
absent. No code path used here calls torchvision.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile


def _torchvision_stand_in() -> None:
    import enum
    import types

    import transformers.image_utils  # noqa: F401  (records torchvision as absent first)
    import transformers.models.auto.processing_auto  # noqa: F401

    class InterpolationMode(enum.Enum):
        NEAREST = "nearest"
        BILINEAR = "bilinear"
        BICUBIC = "bicubic"

    root = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.InterpolationMode = transforms.InterpolationMode = InterpolationMode
    root.transforms, transforms.functional = transforms, functional
    sys.modules.update({"torchvision": root, "torchvision.transforms": transforms,
                        "torchvision.transforms.functional": functional})


def sglang_case(case: dict, work: str) -> dict:
    import argparse

    from sglang.srt import runtime_context
    from sglang.srt.configs.model_config import ModelConfig
    from sglang.srt.eplb.expert_location import compute_initial_expert_location_metadata
    from sglang.srt.server_args import ServerArgs

    model_dir = tempfile.mkdtemp(dir=work)
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(case["hf_config"], f)
    argv = list(case["argv"])
    argv[argv.index("--model-path") + 1] = model_dir
    argv += ["--device", "cpu"]   # the one flag added: this machine has no GPU
    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    try:
        server_args = ServerArgs.from_cli_args(parser.parse_args(argv))
        runtime_context.publish(server_args, role="scheduler")
        metadata = compute_initial_expert_location_metadata(
            ModelConfig.from_server_args(server_args), moe_ep_rank=0)
    except (ValueError, AssertionError) as err:
        return {"error": f"{type(err).__name__}: {err}"}
    return {"physical_to_logical_map": metadata.physical_to_logical_map.tolist(),
            "logical_to_all_physical_map": metadata.logical_to_all_physical_map.tolist(),
            "num_local_physical_experts": metadata.num_local_physical_experts,
            "ep_size": metadata.ep_size}


def vllm_case(case: dict) -> dict:
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    from vllm.distributed.eplb.eplb_state import EplbState
    from vllm.model_executor.layers.fused_moe.expert_map_manager import determine_expert_map

    e, r, ep = case["num_experts"], case["num_redundant"], case["ep"]
    start = EplbState.build_initial_global_physical_to_logical_map(e, r)
    ranks = []
    for rank in range(ep):
        _, expert_map, _ = determine_expert_map(ep, rank, e + r)
        ranks.append([p for p, local in enumerate(expert_map.tolist()) if local >= 0])
    return {"physical_to_logical_map": list(start), "rank_slots": ranks}


def probe() -> None:
    """Import what both paths import (``.ci/runtime-parsers`` installs what is missing)."""
    _torchvision_stand_in()
    from sglang.srt.configs.model_config import ModelConfig  # noqa: F401
    from sglang.srt.eplb.expert_location import compute_initial_expert_location_metadata  # noqa: F401
    vllm_case({"num_experts": 2, "num_redundant": 0, "ep": 2})


def main() -> int:
    if sys.argv[1:] == ["probe"]:
        probe()
        return 0
    runtime, path = sys.argv[1:3]
    with open(path) as f:
        cases = [json.loads(line) for line in f if line.strip()]
    if runtime == "sglang":
        _torchvision_stand_in()
        with tempfile.TemporaryDirectory() as work:
            for case in cases:
                print(json.dumps(sglang_case(case, work)), flush=True)
    else:
        for case in cases:
            print(json.dumps(vllm_case(case)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
