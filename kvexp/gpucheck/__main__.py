"""`python -m kvexp.gpucheck`: the acceptance run (`make gpu-check`; see kvexp/gpucheck/__init__.py).

Prints one verdict line per check and writes every figure to --out; the exit status is 1 when a check
fails. On a machine without a GPU the correctness checks run on the CPU and the GPU-only ones are NOT RUN.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import torch

from kvexp.gpucheck import correctness, speed
from kvexp.gpucheck.verdicts import Findings, not_run, write_json

# the organism's problems: on a CPU fewer, so the run stays under 5 minutes on 2 shared cores
GPU_PROBLEMS, CPU_PROBLEMS = 32, 12


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m kvexp.gpucheck", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="auto", help="auto (cuda when torch sees a GPU, else cpu), cuda or cpu")
    p.add_argument("--out", type=Path, default=Path("gpucheck.json"), help="where to write every figure")
    p.add_argument(
        "--problems",
        type=int,
        default=None,
        help=f"organism problems per policy (default {GPU_PROBLEMS} on a GPU, {CPU_PROBLEMS} on a CPU; at most 32)",
    )
    p.add_argument("--scale-steps", type=int, default=speed.GpuPlan().steps, help="decode steps a row in the auto runs")
    p.add_argument(
        "--write-reference",
        type=Path,
        default=None,
        help="make the CPU reference instead of checking against it (kvexp/gpucheck/reference.json)",
    )
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda but torch sees no CUDA device")
    if args.problems is None:
        args.problems = GPU_PROBLEMS if args.device.startswith("cuda") else CPU_PROBLEMS
    if args.problems < 1:
        p.error("--problems must be >= 1")
    if args.scale_steps < 2:
        p.error("--scale-steps must be >= 2")
    return args


def machine(device: torch.device) -> dict:
    import transformers

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_memory_bytes"] = torch.cuda.get_device_properties(device).total_memory
        info["cuda"] = torch.version.cuda
    return info


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    reference = None
    if args.write_reference is None:
        reference = correctness.load_reference()
        correctness.check_problem_count(args.problems, reference)
    info = machine(device)
    findings = Findings(args.out, info, {"problems": args.problems}, lambda line: print(line, flush=True))
    findings.log(
        f"kvexp gpu-check on {info.get('gpu', 'cpu')}: torch {info['torch']}, transformers {info['transformers']}, "
        f"{args.problems} organism problems"
    )
    correctness.run(device, args.problems, reference, findings)
    plan = speed.GpuPlan(steps=args.scale_steps)
    if device.type == "cuda":
        speed.run(device, plan, findings)
    else:
        for check, what in speed.checks(plan).items():
            findings.add(not_run(check, what, "no GPU"))
    findings.save()
    result, verdicts = findings.result, findings.verdicts
    if args.write_reference is not None:
        write_json(args.write_reference, correctness.reference_from(result["figures"]["organism"], device))
        findings.log(f"reference written: {args.write_reference}")
    counts = {s: sum(v.status == s for v in verdicts) for s in ("PASS", "FAIL", "INFO", "NOT RUN")}
    findings.log(
        f"\n{'PASSED' if result['passed'] else 'FAILED'}: "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
        + f"; {result['elapsed_s']:.0f}s; figures in {args.out}"
    )
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
