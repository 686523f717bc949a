"""``moeopt calibrate``: fit a hardware profile (docs/calibration.md) from aiconfigurator's
measured database (optional extra ``calibrate``) or from a CSV of the user's own timings."""

from __future__ import annotations

import click

from optimizer.cli.common import VERBOSE, run


@click.command("calibrate", help=(
    "Fit a hardware profile (per-operator efficiencies, docs/calibration.md) for GPU --preset and "
    "write it to --output. Sources: --from-aiconfigurator reads the measured kernel database of "
    "the aiconfigurator-core package (pip install 'moeopt[calibrate]'); --from CSV reads your own "
    "timings (benchmarks/microbench_gpu.py writes that CSV). Use the result with "
    "hardware.profile = its path."))
@click.option("--from", "csv_path", type=click.Path(dir_okay=False), default=None,
              help="measurements CSV (columns in docs/calibration.md)")
@click.option("--from-aiconfigurator", "from_aic", is_flag=True,
              help="fit from aiconfigurator-core's measured database")
@click.option("--preset", required=True, help="GPU preset whose peaks the efficiencies refer to")
@click.option("--runtime", type=click.Choice(["trtllm", "sglang", "vllm"]), default=None,
              help="aiconfigurator runtime tried first (default trtllm, then sglang, vllm)")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="profile JSON to write")
@VERBOSE
def command(csv_path, from_aic, preset, runtime, output, verbose):
    def body():
        from optimizer.errors import InputError
        from optimizer.inputs.files import write_atomic
        from optimizer.inputs.presets import GPU_PRESETS
        from optimizer.profiles.fit import profile_json
        if (csv_path is None) == (not from_aic):
            raise InputError("give exactly one of --from CSV and --from-aiconfigurator")
        if preset not in GPU_PRESETS:
            raise InputError(f"--preset={preset!r}: unknown; known: {', '.join(GPU_PRESETS)}")
        if from_aic:
            from optimizer.profiles import aiconfigurator as aic
            if preset not in aic.SYSTEM_OF_PRESET:
                raise InputError(f"--preset={preset!r}: the aiconfigurator database has no such GPU; "
                                 f"it has {', '.join(aic.SYSTEM_OF_PRESET)}")
            try:
                profile = aic.fit_profile(preset, runtime=runtime)
            except aic.AiconfiguratorMissing as exc:
                raise InputError(f"--from-aiconfigurator: {exc}") from None
        else:
            from optimizer.profiles.fit import CsvError, fit_csv
            try:
                profile = fit_csv(csv_path, preset)
            except CsvError as exc:
                raise InputError(f"--from: {exc}") from None
        write_atomic(output, profile_json(profile), "--output")
        click.echo(f"wrote {output}: {len(profile.gemm)} GEMM, {len(profile.grouped_gemm)} grouped-GEMM, "
                   f"{len(profile.attention)} attention, {len(profile.collectives)} collective tables")
    run(verbose, body)
