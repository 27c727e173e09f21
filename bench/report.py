"""Writes docs/benchmarks.md from the figures `bench.serving` saved (docs/benchmarks.json).

  python -m bench.report --input docs/benchmarks.json --output docs/benchmarks.md
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

GPU_ON_PAPER = """## GPU on paper (not measured: no GPU was available to this project yet)

Expected for the `gpu-*` targets on one H100 SXM (3.35 TB/s HBM3, ~990 TFLOP/s dense fp16/bf16),
t5-base, 180 prompt tokens, 16 new tokens. Replace with `make gpu-check` measurements.

- **Decode step, memory floor.** A step reads the decoder's weights once: ~0.3 GB in bf16
  (~0.6 GB fp32) → 0.09 ms (0.18 ms fp32) at 3.35 TB/s. The KV cache adds little at these
  lengths (16 new tokens x 12 layers x 2 x 768 x 2 B ≈ 0.6 MB per row, cross K/V ≈ 6.6 MB per
  row). In practice a step is bound by kernel launches (~150 kernels x ~5 µs ≈ 0.8 ms with
  ONNX Runtime; less with TensorRT and CUDA graphs), so expect **~1 ms per step at batch 1,
  nearly flat up to batch 64**.
- **Encoder.** ~31 GFLOP for 180 tokens → 0.03 ms at peak; launch-bound again, **~1 ms**.
- **One answer at concurrency 1:** 1 ms encoder + 16 x ~1 ms steps + the Python loop's own
  work per step (measured here on CPU, see "Orchestration overhead") → **~20 ms**, against
  ~60-80 ms for `transformers` `generate` in eager PyTorch on the same GPU (launch-bound too,
  with more kernels per step).
- **Saturation:** with steps nearly flat in batch size, 64 rows decoding together give
  ~64 answers per ~(16 ms + 64 encoder calls) → **~800-1500 answers/s**, where the encoder
  (not batched across requests of different lengths) and the Python scheduler become the limits.
"""


def table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def find(rows: list[dict], prefix: str, mode: str) -> dict | None:
    return next((r for r in rows if r["system"].startswith(prefix) and r["mode"] == mode), None)


def span(row: dict, key: str) -> str:
    """"low–high" of a repeated figure (`key`_min, `key`_max), or "" for a single run."""
    low, high = row.get(f"{key}_min"), row.get(f"{key}_max")
    return "" if low is None or high is None or row.get("repetitions", 1) < 2 else f"{low}–{high}"


def closed_table(closed: list[dict]) -> str:
    shown = [{**r, "p50 runs": span(r, "p50_ms"), "answers/s runs": span(r, "answers_per_s")} for r in closed]
    return table(shown, ["system", "mode", "answers", "errors", "p50_ms", "p50 runs", "p95_ms", "p99_ms",
                         "answers_per_s", "answers/s runs", "mean_batch", "mean_new_tokens"])


Target = tuple[str, str, bool | None]  # (target, measured, met); met None: not measured in this run
NOT_MEASURED = "not measured"
# `bench.serving.step_counters`: t5_greedy's own work per scheduler iteration.
STEP_COLUMNS = ("mean_batch", "graph_ms_per_step", "encoder_ms_per_step", "overhead_ms_per_step")


def ratio_target(label: str, ours: dict | None, theirs: dict | None, key: str, bound: float,
                 at_most: bool = False) -> Target:
    """ours[key] / theirs[key] ≥ bound (≤ with `at_most`); not measured without both."""
    if not ours or not theirs or not theirs.get(key) or ours.get(key) is None:
        return label, NOT_MEASURED, None
    ratio = ours[key] / theirs[key]
    return label, f"{ratio:.2f}x", ratio <= bound if at_most else ratio >= bound


def one_client_target(label: str, ours: dict | None, theirs: dict | None, roof: dict | None) -> Target:
    """p50 latency against (a)'s, with the floor a lone answer has on this machine where measured."""
    label, text, met = ratio_target(label, ours, theirs, "p50_ms", 0.75, at_most=True)
    if met is not None and roof and roof.get("lone_answer_floor_ms"):
        text += f" (floor: {roof['lone_answer_floor_ms'] / theirs['p50_ms']:.2f}x, see Roofline)"
    return label, text, met


def memory_target(data: dict, name: str | None) -> Target:
    """Summed RSS of the fp32 server: once idle after the load (t5_greedy has handed its free
    heap back), with the figure right after the load beside it; results written before the
    settled figure was measured are judged on the one they have."""
    label = "server resident memory ≤ 1.3 GB (t5-base fp32; RSS summed over the processes)"
    rss, pss = data["rss_mb"].get(name), data.get("pss_mb", {}).get(name)
    settled, settled_pss = data.get("settled_rss_mb", {}).get(name), data.get("settled_pss_mb", {}).get(name)
    if settled:
        return label, f"{settled} MB idle after the load (PSS {settled_pss} MB); {rss} MB right after it", settled <= 1300
    if rss:
        return label, f"{rss} MB" + (f" (PSS {pss} MB)" if pss else ""), rss <= 1300
    return label, NOT_MEASURED, None


def targets(data: dict) -> list[Target]:
    """The issue's targets first (fp32 at the top level against the roofline and CTranslate2 fp32,
    latency at the lowest level against (a), the open loop, int8 against CTranslate2 int8, fp32
    server memory), then the earlier ones against (a) and (b) and the orchestration overhead."""
    rows, roof = data["rows"], data.get("roofline")
    closed = [r for r in rows if r["mode"].startswith("closed")]
    levels = sorted({int(r["mode"].split("=")[1]) for r in closed})
    if not levels:
        return []
    top, low = f"closed c={max(levels)}", f"closed c={min(levels)}"
    ours = find(rows, "(c)", top)
    found: list[Target] = []
    label = f"fp32 concurrency {max(levels)}: ≥ 90% of the roofline"
    share = ours["answers_per_s"] / roof["answers_per_s"] if ours and roof else None
    found.append((label, NOT_MEASURED, None) if share is None else (label, f"{share:.0%}", share >= 0.90))
    found.append(ratio_target(f"fp32 concurrency {max(levels)}: ≥ 1.3x CTranslate2 fp32 (d) in answers/s", ours,
                              find(rows, "(d)", top), "answers_per_s", 1.3))
    found.append(one_client_target(f"concurrency {min(levels)}: p50 latency ≤ 0.75x (a)", find(rows, "(c)", low),
                                   find(rows, "(a)", low), roof))
    opened = [r for r in rows if r["mode"].startswith("open")]
    load = data.get("open_load", 0.8)
    found.append(ratio_target(f"open loop at {load:.0%}: p95 iteration-level ≤ 0.8x request-level",
                              next((r for r in opened if r["system"].startswith("(c)")), None),
                              next((r for r in opened if r["system"].startswith("(c')")), None), "p95_ms", 0.8,
                              at_most=True))
    found.append(ratio_target(f"int8 concurrency {max(levels)}: ≥ CTranslate2 int8 (d') in answers/s",
                              find(rows, "(c8)", top), find(rows, "(d')", top), "answers_per_s", 1.0))
    name = ours["system"] if ours else None  # the server's memory is recorded under its system name
    found.append(memory_target(data, name))
    found.append(ratio_target(f"concurrency {max(levels)}: throughput ≥ 4x (a)", ours, find(rows, "(a)", top),
                              "answers_per_s", 4))
    found.append(ratio_target(f"concurrency {max(levels)}: throughput ≥ 1.5x (b)", ours, find(rows, "(b)", top),
                              "answers_per_s", 1.5))
    first = next((r for r in closed if "overhead_ms_per_step" in r and r["system"].startswith("(c)")), None)
    if first and roof:
        share = first["overhead_ms_per_step"] / roof["step_ms"]["1"]
        found.append((f"orchestration overhead per step ≤ 10% of a batch-1 step ({first['mode']})",
                      f"{share:.1%}", share <= 0.10))
    return found


def machine_text(data: dict) -> str:
    """The machine `bench.serving` recorded (this one for a run that recorded none)."""
    recorded = data.get("machine")
    if not recorded:
        return f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})"
    dot = f", int8 dot product: {recorded['int8_dot']}" if recorded.get("int8_dot") else ", no int8 dot product (VNNI)"
    return f"{recorded['cpus']} CPUs ({recorded['cpu']}{dot})"


def header(data: dict, command: str) -> list[str]:
    minutes = f"took {data['duration_s'] / 60:.0f} minutes here" if data.get("duration_s") else "about 15-20 minutes"
    runs = data.get("repetitions", 1)
    return [
        "# Benchmarks",
        "",
        f"Reproduce: `{command}` ({minutes}). Machine: {machine_text(data)}, no GPU; all systems measured in one run, on the same "
        f"SQuAD 2.0 dev questions (median {data['prompt_tokens_median']:.0f} prompt tokens), "
        "fixed `max_new_tokens`; demo t5-base (random weights; fp32 unless the system says int8). Figures are "
        "noisy on 2 shared cores: compare within this run.",
        "",
        "(a) and (b) answer one request at a time; (d) and (d') are CTranslate2 "
        f"{data.get('ctranslate2_version') or ''} (`translate_batch`, greedy, "
        "all cores to one batch) behind a queue that batches whatever requests are waiting, up to 32; (c), (c') and "
        "(c8) are this project's server.",
        "",
        *(["![throughput and p95 latency](benchmarks.png)", ""] if data.get("plotted", True) else []),
        "## Closed loop (each client sends its next request when the last is answered)",
        "",
        (f"Each level is {runs} runs, in each of which every client sends the same number of requests"
         + ("; one run per round: in each round every level in turn, and at each level every system in turn, all "
            "servers up, so that the machine's slow and fast phases fall on all of them alike. " if in_rounds(data)
            else ", in a row. ")
         + "`answers_per_s` is the median of the runs, `answers/s runs` their min–max, `p50 runs` the min–max "
         "of the runs' p50; the latency percentiles and `answers` pool all runs." if runs > 1 else
         "Each level is one run (no run-to-run spread measured).")
        + " `mean_batch`: rows per decode step for (c)/(c')/(c8), requests per `generate`/`translate_batch` "
        "call for the others.",
        "",
    ]


def roofline_text(roof: dict) -> str:
    """What the roofline counts, with its measured parts (older results have no first-call share)."""
    cross = roof.get("cross_projection_ms")
    first = "" if cross is None else (
        f", the decoder's first call {cross} ms more than a step (batch 1: it projects the prompt into "
        "every layer's cross-attention keys and values)")
    per_request = "one encoder call" + ("" if cross is None else " and one first decoder call")
    return (f"In-process ONNX Runtime on this machine: encoder {roof['encoder_ms']} ms per request (batch 1){first}, "
            f"decode step {roof['step_ms']['1']} ms at batch 1 and {roof['step_ms'][str(roof['concurrency'])]} ms "
            f"at batch {roof['concurrency']}. A server doing nothing else (per request {per_request}, not batched; "
            f"all decode steps batched) would answer **{roof['answers_per_s']} answers/s** at concurrency "
            f"{roof['concurrency']}." + lone_answer_text(roof))


def in_rounds(data: dict) -> bool:
    """Whether the systems were measured in turn, round by round (`bench.serving.rounds`), or
    one after the other (results before 2026-12-06)."""
    return data.get("schedule") == "rounds"


def roofline_runs_text(data: dict) -> str:
    """Which of the rooflines measured in the run this is (results before the rounds measured one)."""
    runs = data.get("roofline_answers_per_s_runs", [])
    if len(runs) < 2 or not in_rounds(data):
        return ""
    return (f" Measured at the start of each round ({', '.join(map(str, runs))} answers/s); the figures above "
            "and the target are the median round's.")


def windows_text(data: dict) -> str:
    """How the open loop was run (older results ran one window per system)."""
    if not data.get("open_windows"):
        return ""
    return (f"{data['open_windows']} windows of {data['open_seconds']:g} s per system, the systems in turn, with the "
            "same arrivals for both in each round; the percentiles pool the windows, `p95 per window` shows them "
            "one by one. ")


def lone_answer_text(roof: dict) -> str:
    """The floor under a batch-1 step and a lone answer (results before it was measured have none)."""
    if not roof.get("step_floor_ms"):
        return ""
    return (f" A decode step at batch 1 reads {roof['step_weights_mb']} MB of weights; at the {roof['read_gb_s']} "
            f"GB/s this machine reads memory (`python -m bench.memory_speed`) it takes at least "
            f"{roof['step_floor_ms']} ms (measured: {roof['step_ms']['1']} ms). A lone answer, with the encoder and "
            f"first calls as measured, takes at least **{roof['lone_answer_floor_ms']} ms**.")


def memory_section(data: dict) -> list[str]:
    pss, settled, settled_pss = (data.get(key, {}) for key in ("pss_mb", "settled_rss_mb", "settled_pss_mb"))
    columns = ["system", "rss_mb", "pss_mb"] + (["settled_rss_mb", "settled_pss_mb"] if settled else [])
    rows = [{"system": k, "rss_mb": v, "pss_mb": pss.get(k, ""), "settled_rss_mb": settled.get(k, ""),
             "settled_pss_mb": settled_pss.get(k, "")} for k, v in data["rss_mb"].items()]
    return ["## Server memory", "",
            "`rss_mb`: resident memory summed over the server's processes right after the closed loops (pages "
            "they share, such as each Python stub's libraries, counted once per process); `pss_mb`: each shared "
            "page split between its users, so the sum is what the server holds. `settled_*`: the same "
            "after the server has been idle for a few seconds (`bench.serving.SETTLE_S`; `t5_greedy` hands its "
            "free heap back to the OS after a second idle)." + (
                " With every server up at once, PSS also splits the libraries a server shares with the others "
                "(the same Python, numpy, ONNX Runtime): (c)'s settled figures are read with the others "
                "stopped, the others' as they stop one by one." if in_rounds(data) else ""), "",
            table(rows, columns), ""]


def render(data: dict, command: str) -> str:
    rows = data["rows"]
    closed = [r for r in rows if r["mode"].startswith("closed")]
    opened = [r for r in rows if r["mode"].startswith("open")]
    roof = data.get("roofline")
    out = header(data, command) + [closed_table(closed), ""]
    met = {True: "yes", False: "**no**", None: "–"}
    out += ["## Targets", "", table([{"target": t, "measured": m, "met": met[ok]} for t, m, ok in targets(data)],
                                    ["target", "measured", "met"]), ""]
    out += speed_section(closed, roof)
    if data.get("skipped"):
        out += ["Not measured: " + "; ".join(f"{k} ({v})" for k, v in data["skipped"].items()) + ".", ""]
    if data.get("int8_agreement"):
        out += ["## int8 against fp32", "",
                "From the export manifest of (c8)'s repository (the export's own validation):", "",
                table([{"figure": k, "value": v} for k, v in data["int8_agreement"].items()], ["figure", "value"]), ""]
    if roof:
        out += ["## Roofline", "", roofline_text(roof) + roofline_runs_text(data), ""]
    if opened:
        out += ["## Open loop (Poisson arrivals)", "",
                f"Arrival rate {data['open_rate']:.2f}/s = {data.get('open_load', 0.8):.0%} of (c)'s closed-loop "
                f"saturation; latency counted from each arrival. {windows_text(data)}Where recorded, `t5_greedy`'s "
                "counters per iteration over the open loop, as in \"Orchestration overhead\".", "",
                table([{**r, "p95 per window": ", ".join(map(str, r.get("p95_ms_windows", [])))} for r in opened],
                      ["system", "mode", "answers", "errors", "p50_ms", "p95_ms", "p99_ms", "answers_per_s",
                       *(["p95 per window"] if any("p95_ms_windows" in r for r in opened) else []),
                       *[c for c in STEP_COLUMNS if any(c in r for r in opened)]]), ""]
    if data.get("perf_analyzer"):
        out += ["## perf_analyzer on (c)", "",
                "NVIDIA's `perf_analyzer` 2.51 (from the tritonclient 2.51.0 wheel), gRPC, one fixed question.", "",
                table([{"error": "", **row} for row in data["perf_analyzer"]],
                      ["concurrency", "answers_per_s", "p50_ms", "p95_ms", "p99_ms", "error"]), ""]
    out += memory_section(data)
    out += overhead(closed, roof)
    out.append(GPU_ON_PAPER)
    return "\n".join(out)


SLOWER = 1.25  # served batch-1 steps this much slower than in-process: the machine slowed down


def speed_section(closed: list[dict], roof: dict | None) -> list[str]:
    """The machine's speed while each fp32 server was measured: its decoder graph's time per step
    at one client against the same graph in-process (the roofline)."""
    rows = [r for r in closed if r["mode"] == "closed c=1" and r.get("graph_ms_per_step")
            and r["system"].startswith(("(c)", "(c')"))]
    if not rows or not roof:
        return []
    table_rows = [{"system": r["system"], "served ms per step": r["graph_ms_per_step"],
                   "in-process ms per step": roof["step_ms"]["1"],
                   "ratio": f"{r['graph_ms_per_step'] / roof['step_ms']['1']:.2f}x"
                   + (" **slower**" if r["graph_ms_per_step"] / roof["step_ms"]["1"] > SLOWER else "")}
                  for r in rows]
    return ["## Machine speed during the run", "",
            "The decoder graph's time per step at one client, served (`t5_greedy`'s counters; it includes the "
            "first call's cross-attention projection, about 1.1x a step) and in-process "
            f"(the roofline's batch-1 step). Above {SLOWER}x the machine ran slower while that system was measured "
            "(other tenants of its cores), and that system's ratios against the others in this run are not its own.",
            "", table(table_rows, ["system", "served ms per step", "in-process ms per step", "ratio"]), ""]


def overhead(closed: list[dict], roof: dict | None) -> list[str]:
    steps = [r for r in closed if "overhead_ms_per_step" in r and r["system"].startswith("(c)")]
    if not steps or not roof:
        return []
    return ["## Orchestration overhead", "",
            "From `t5_greedy`'s counters around each closed-loop level of (c): per scheduler iteration, "
            "the mean number of rows decoded, the time inside the decoder graph, inside the encoder (which "
            "the same loop runs on cpu), and the loop's own work (wall time of the iteration minus both).", "",
            table([{"mode": r["mode"], **{c: r.get(c, 0.0) for c in STEP_COLUMNS},
                    "overhead / batch-1 step": f"{r['overhead_ms_per_step'] / roof['step_ms']['1']:.1%}"}
                   for r in steps], ["mode", *STEP_COLUMNS, "overhead / batch-1 step"]), ""]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, default=Path("docs/benchmarks.json"))
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--command", default="make bench")
    args = parser.parse_args()
    args.output.write_text(render(json.loads(args.input.read_text()), args.command) + "\n")
    print(args.output)


if __name__ == "__main__":
    main()
