"""``python -m bench.fullsize`` (``make bench-fullsize``): the real backbones at their real size, one table per model.

For Kosmos-2 and PaliGemma-3B at full size (random weights, ``bench.memory``): the weight bytes, then the peak
resident set, the time and the largest action difference from torch fp32 of the torch engine (fp32, bf16), the
export (fp32, fp16, int8, int4), the ONNX Runtime engine on each export, and a LoRA fine-tuning step. Each row is
its own process; a row over ``--cap-gib`` is stopped and reported as not fitting. Results are kept in
``out/bench_memory/<model>_rows.json`` as each row finishes, so an interrupted run resumes where it stopped
(``--redo`` measures again); the tables are written into ``bench/results/fullsize.md`` between their markers, the
commentary around them kept. Not in CI: hours on two CPU cores (the closing note of issue 19 gives the time).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.memory import CONFIGS, Failed, full_size_checkpoint, measure, weight_bytes
from robovlm.runtime.shared_weights import WEIGHTS_FILE

log = logging.getLogger("bench.fullsize")
GIB = 1024**3
RESULTS = Path("bench/results/fullsize.md")
EXPORT_DTYPES = {"fp32": "float32", "fp16": "float16", "int8": "float32", "int4": "float32"}  # what it loads


@dataclass(frozen=True)
class Row:
    kind: str  # torch | export | onnxruntime-shared | onnxruntime-per-session | lora
    dtype: str  # the torch engine's dtype, the export's (fp32 | fp16 | int8 | int4), bfloat16 for LoRA
    label: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.dtype}"


PLAN = (
    Row("torch", "float32", "torch engine (load, warm-up, 3 steps)"),
    Row("torch", "bfloat16", "torch engine (load, warm-up, 3 steps)"),
    Row("export", "fp32", "`robovlm export` (load, 4 graphs, parity)"),
    Row("onnxruntime-shared", "fp32", "ONNX Runtime engine, one copy of the weights (load, warm-up, 3 steps)"),
    Row("onnxruntime-per-session", "fp32", "ONNX Runtime, a copy per session (ONNX Runtime's plain way)"),
    Row("export", "fp16", "`robovlm export --dtype fp16`"),
    Row("onnxruntime-shared", "fp16", "ONNX Runtime engine"),
    Row("export", "int8", "`robovlm export --quantize int8` (dynamic MatMul)"),
    Row("onnxruntime-shared", "int8", "ONNX Runtime engine"),
    Row("export", "int4", "`robovlm export --quantize int4` (MatMulNBits)"),
    Row("onnxruntime-shared", "int4", "ONNX Runtime engine"),
    Row("lora", "bfloat16", "LoRA step: r 8, vision frozen, checkpointing, frozen weights held in bf16"),
)

GPU_ROWS = ("torch bf16 (CUDA)", "ONNX Runtime CUDA fp16", "TensorRT fp16")


def run_row(row: Row, ckpt: Path, work: Path, cap_gib: float) -> dict:
    """Measure one row; ONNX Runtime rows need their export in ``work`` (made by the export row before them)."""
    if row.kind == "torch":
        return {**measure(ckpt, "torch", row.dtype, cap_gib=cap_gib), "weights": weight_bytes(ckpt, row.dtype)}
    exported = work / f"{ckpt.name}_{row.dtype}"
    if row.kind == "export":
        shutil.rmtree(exported, ignore_errors=True)
        result = measure(ckpt, "export", row.dtype, str(exported), cap_gib=cap_gib)
        return {**result, "weights": weight_bytes(ckpt, EXPORT_DTYPES[row.dtype])}
    if row.kind.startswith("onnxruntime"):
        if not (exported / "onnx" / WEIGHTS_FILE).is_file():
            raise Failed("no export to run (its export row did not finish)")
        graphs = (exported / "onnx" / WEIGHTS_FILE).stat().st_size
        return {**measure(exported, row.kind, row.dtype, cap_gib=cap_gib), "weights": graphs}
    result = measure(ckpt, "lora", row.dtype, cap_gib=cap_gib)
    return {**result, "weights": weight_bytes(ckpt, "bfloat16")}


def select(rows: str | None) -> tuple[Row, ...]:
    """The rows of ``PLAN`` named in ``rows`` (comma-separated kinds, dtypes or ``kind:dtype`` keys; all when None),
    each ONNX Runtime row with the export it runs on."""
    if rows is None:
        return PLAN
    wanted = set(rows.split(","))
    chosen = {r for r in PLAN if {r.kind, r.dtype, r.key} & wanted}
    if not chosen:
        raise ValueError(f"--rows {rows!r} names none of {[r.key for r in PLAN]}")
    chosen |= {Row("export", r.dtype, "") for r in chosen if r.kind.startswith("onnxruntime")}
    keys = {r.key for r in chosen}
    return tuple(r for r in PLAN if r.key in keys)


def measure_model(
    name: str, work: Path, cap_gib: float, redo: bool, plan: tuple[Row, ...] = PLAN
) -> tuple[dict, dict[str, dict]]:
    """The baseline and the rows of ``plan`` for ``name`` (the others, and those measured before, from the results
    file). An export is kept on disk while an ONNX Runtime row of ``plan`` still needs it, then removed (7-12 GB)."""
    ckpt = full_size_checkpoint(name, work)
    store = work / f"{name}_rows.json"
    rows: dict[str, dict] = json.loads(store.read_text()) if store.is_file() else {}
    if redo:
        for row in plan:
            rows.pop(row.key, None)
    if "baseline" not in rows:
        rows["baseline"] = measure(ckpt, "none", "float32")

    def export_needed(dtype: str) -> bool:
        return any(r.kind.startswith("onnxruntime") and r.dtype == dtype and r.key not in rows for r in plan)

    for row in plan:
        exported = work / f"{ckpt.name}_{row.dtype}"
        rerun_export = (
            row.kind == "export" and export_needed(row.dtype) and not (exported / "onnx" / WEIGHTS_FILE).is_file()
        )
        if row.key in rows and not rerun_export:
            continue
        log.info("%s: %s %s", name, row.kind, row.dtype)
        try:
            rows[row.key] = run_row(row, ckpt, work, cap_gib)
        except Failed as failure:
            rows[row.key] = {"failed": str(failure)}
        log.info(
            "%s: %s %s -> %s", name, row.kind, row.dtype, {k: v for k, v in rows[row.key].items() if k != "actions"}
        )
        store.write_text(json.dumps(rows))
        if row.kind.startswith("onnxruntime") and not export_needed(row.dtype):
            shutil.rmtree(exported, ignore_errors=True)
    return rows.pop("baseline"), rows


def earlier_lines(path: Path, name: str) -> dict[str, list[str]]:
    """Row key -> the table lines an earlier run wrote for it into ``path`` (measured ones only): a row this run did
    not measure keeps them when the row cache (``out/``) is gone, as on a fresh checkout."""
    begin, end = f"<!-- bench-fullsize {name} begin -->", f"<!-- bench-fullsize {name} end -->"
    doc = path.read_text() if path.is_file() else ""
    if begin not in doc or end not in doc:
        return {}
    out: dict[str, list[str]] = {}
    for line in doc[doc.index(begin) : doc.index(end)].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or cells[2] == "" and "not measured" in cells[3]:
            continue
        for row in PLAN:
            if cells[0].startswith(row.label) and cells[1] == row.dtype:
                out.setdefault(row.key, []).append(line)
    return out


def table(name: str, baseline: dict, rows: dict[str, dict], earlier: dict[str, list[str]] | None = None) -> str:
    """The markdown of one model's rows; a row not in ``rows`` keeps its ``earlier`` lines (``earlier_lines``)."""
    reference = rows.get("torch:float32", {}).get("actions")
    lines = [
        f"`{CONFIGS[name]}` at full size; process baseline {baseline['peak'] / GIB:.2f} GiB (Python with torch and "
        "transformers imported). *Weights*: at the row's dtype (ONNX Runtime: `weights.onnx.data`, each tensor once). "
        "*Action difference*: largest absolute difference of the 3 steps' action chunks from the torch fp32 engine's "
        "(m/s; random weights, so a measure of numerics, not of driving).",
        "",
        "| what | dtype | weights GiB | peak RSS GiB | above baseline / weights | time | action difference |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in PLAN:
        r = rows.get(row.key)
        if r is None:
            lines += (earlier or {}).get(row.key) or [f"| {row.label} | {row.dtype} | | not measured | | | |"]
            continue
        if "failed" in r:
            lines.append(f"| {row.label} | {row.dtype} | | **did not finish**: {r['failed']} | | | |")
            continue
        w = r["weights"]
        ratio = f"{(r['peak'] - baseline['peak']) / w:.2f}x"
        if row.kind == "export":
            time_ = f"{r['wall_s']:.0f} s in all"
            diff = f"{r['parity']:.2g} (its parity report)"
        elif row.kind == "lora":
            lines.append(
                f"| {row.label}: load and set up | {row.dtype} | {w / GIB:.2f} | {r['peak'] / GIB:.2f} | {ratio} | | |"
            )
            ratio = f"{(r['step_peak'] - baseline['peak']) / w:.2f}x"
            lines.append(
                f"| {row.label}: the step (batch 1, window 8) | {row.dtype} | {w / GIB:.2f} | "
                f"{r['step_peak'] / GIB:.2f} | {ratio} | {r['step_s']:.3g} s/step | |"
            )
            continue
        else:
            time_ = f"{r['step_s']:.2f} s/step"
            diff = "-" if not reference else f"{_max_diff(r['actions'], reference):.2g}"
        lines.append(
            f"| {row.label} | {row.dtype} | {w / GIB:.2f} | {r['peak'] / GIB:.2f} | {ratio} | {time_} | {diff} |"
        )
    lines += ["", "| GPU | peak GPU memory | step time | action difference |", "| --- | --- | --- | --- |"]
    lines += [f"| {gpu} | not measured: no GPU machine in this session | | |" for gpu in GPU_ROWS]
    return "\n".join(lines)


def _max_diff(actions: list, reference: list) -> float:
    return max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(actions, reference))


def write_block(path: Path, name: str, text: str) -> None:
    """Replace the block between ``name``'s markers in ``path`` (appended under a heading if it has none)."""
    begin, end = f"<!-- bench-fullsize {name} begin -->", f"<!-- bench-fullsize {name} end -->"
    doc = path.read_text() if path.is_file() else "# The real backbones at their real size\n"
    stamp = f"Written by `make bench-fullsize` on {datetime.date.today()}, {os.cpu_count()} CPU cores, no GPU."
    block = f"{begin}\n{stamp} {text}\n{end}"
    if begin in doc and end in doc:
        doc = doc[: doc.index(begin)] + block + doc[doc.index(end) + len(end) :]
    else:
        doc = doc.rstrip() + f"\n\n## {name} at full size (`make bench-fullsize`)\n\n{block}\n"
    path.write_text(doc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fullsize", description=__doc__)
    p.add_argument("--models", default="kosmos2,paligemma", help="comma-separated, of: " + ", ".join(CONFIGS))
    p.add_argument("--cap-gib", type=float, default=21.0, help="stop a row whose resident set passes this")
    p.add_argument(
        "--rows",
        help="measure only these rows: comma-separated kinds (torch, export, onnxruntime-shared, ...), dtypes "
        "(float32, fp16, int8, ...) or kind:dtype keys; an ONNX Runtime row brings its export",
    )
    p.add_argument("--redo", action="store_true", help="measure the chosen rows again instead of resuming")
    p.add_argument("--work", type=Path, default=Path("out/bench_memory"))
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        plan = select(args.rows)
    except ValueError as exc:
        p.error(str(exc))
    for name in filter(None, args.models.split(",")):
        if name not in CONFIGS:
            p.error(f"unknown model {name!r}; one of {list(CONFIGS)}")
        baseline, rows = measure_model(name, args.work, args.cap_gib, args.redo, plan)
        write_block(args.results, name, table(name, baseline, rows, earlier_lines(args.results, name)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
