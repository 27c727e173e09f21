"""`make bench`'s arithmetic without servers: how many requests each repetition sends, how
repeated runs become one row with their spread, how systems take turns in rounds and open-loop
windows, where the int8 agreement is found in an export manifest, and the targets and tables
`bench.report` writes from those rows."""
from __future__ import annotations

import itertools
import os
import time

import numpy as np
import pytest

from bench import latency
from bench.report import find, render, span, targets
from bench.serving import (SYSTEMS, Plan, Run, combine, int8_agreement, memory_mb, open_loops, round_size, rounds,
                           spread, step_counters)


@pytest.mark.parametrize("concurrency, expected", [(1, 6), (4, 8), (16, 32), (64, 128)])
def test_round_size_gives_whole_rounds_and_enough_answers(concurrency, expected):
    size = round_size(concurrency, minimum=16, per_client=4, repetitions=3)
    assert size == expected
    assert size % concurrency == 0 and 3 * size >= max(16, 4 * concurrency)


def test_round_size_with_one_repetition_is_the_minimum_rounded_to_rounds():
    assert round_size(1, 16, 4, 1) == 16
    assert round_size(16, 16, 4, 1) == 64
    assert round_size(3, 16, 4, 1) == 18


def test_spread():
    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert spread([1.0, 2.0]) == {"median": 1.5, "min": 1.0, "max": 2.0}


def test_combine_pools_latencies_and_takes_the_median_rate():
    runs = [Run("(d) x", "closed c=2", [100.0, 300.0], [16, 16], wall_s=1.0),
            Run("(d) x", "closed c=2", [200.0, 200.0], [16, 8], wall_s=2.0, errors=1),
            Run("(d) x", "closed c=2", [400.0, 400.0], [16, 16], wall_s=4.0)]
    row = combine(runs)
    assert row["system"] == "(d) x" and row["mode"] == "closed c=2"
    assert row["answers"] == 6 and row["errors"] == 1 and row["repetitions"] == 3
    assert row["answers_per_s"] == 1.0 and row["answers_per_s_min"] == 0.5 and row["answers_per_s_max"] == 2.0
    assert row["p50_ms"] == 250 and row["p50_ms_min"] == 200 and row["p50_ms_max"] == 400
    assert row["p99_ms"] == 400 and row["mean_new_tokens"] == 14.7


def test_a_run_without_answers_still_makes_a_row():
    row = combine([Run("(a) x", "closed c=1", errors=2, wall_s=1.0)])
    assert row["answers"] == 0 and row["errors"] == 2 and row["p50_ms"] is None and row["answers_per_s"] == 0


def test_step_counters():
    before = {"iterations": 10, "row_steps": 20, "graph_seconds": 1.0, "encoder_seconds": 0.5, "busy_seconds": 2.0}
    after = {"iterations": 110, "row_steps": 420, "graph_seconds": 3.0, "encoder_seconds": 1.5, "busy_seconds": 5.2}
    assert step_counters(before, after) == {"mean_batch": 4.0, "graph_ms_per_step": 20.0, "encoder_ms_per_step": 10.0,
                                            "overhead_ms_per_step": 2.0}


def test_int8_agreement_takes_whatever_the_manifest_names_int8():
    assert int8_agreement({"validation": {"max_abs_diff": 0.1}}) == {}
    assert int8_agreement({}) == {}
    manifest = {"validation": {"token_agreement": 1.0, "int8_agreement": 0.97,
                               "int8": {"identical_answers": 30, "answers": 32}}}
    assert int8_agreement(manifest) == {"validation.int8_agreement": 0.97, "validation.int8.identical_answers": 30,
                                        "validation.int8.answers": 32}


def row(key: str, level: int, rate: float, p50: int, p95: int = 0, **extra) -> dict:
    return {"system": SYSTEMS[key], "mode": f"closed c={level}", "answers": 16, "errors": 0, "p50_ms": p50,
            "p95_ms": p95 or p50, "p99_ms": p95 or p50, "answers_per_s": rate, "mean_new_tokens": 16, **extra}


def bench_data() -> dict:
    rows = [row("a", 1, 1.8, 600), row("a", 16, 1.8, 9000), row("b", 16, 1.9, 8000), row("d", 1, 2.0, 500),
            row("d", 16, 3.0, 5000),
            row("d8", 16, 6.0, 2500), row("c", 1, 2.2, 420, answers_per_s_min=2.0, answers_per_s_max=2.4,
                                             p50_ms_min=400, p50_ms_max=450, repetitions=3),
            row("c", 16, 4.5, 3500), row("cr", 16, 4.0, 4000), row("c8", 16, 5.0, 3000),
            {"system": SYSTEMS["c"], "mode": "open λ=3.60/s", "answers": 200, "errors": 0, "p50_ms": 900,
             "p95_ms": 1500, "p99_ms": 2000, "answers_per_s": 3.5},
            {"system": SYSTEMS["cr"], "mode": "open λ=3.60/s", "answers": 200, "errors": 0, "p50_ms": 1000,
             "p95_ms": 2500, "p99_ms": 3000, "answers_per_s": 3.5}]
    return {"rows": rows, "roofline": {"encoder_ms": 140, "step_ms": {"1": 25, "16": 57}, "answers_per_s": 5.0,
                                       "concurrency": 16},
            "rss_mb": {SYSTEMS["c"]: 1200, SYSTEMS["d"]: 950}, "pss_mb": {SYSTEMS["c"]: 1010, SYSTEMS["d"]: 940}, "open_rate": 3.6, "open_load": 0.8,
            "prompt_tokens_median": 197, "repetitions": 3, "duration_s": 900, "ctranslate2_version": "4.8.5",
            "int8_agreement": {"validation.int8_agreement": 0.97}}


def test_the_issue_targets_from_the_rows():
    found = {t: (m, ok) for t, m, ok in targets(bench_data())}
    assert found["fp32 concurrency 16: ≥ 90% of the roofline"] == ("90%", True)
    assert found["fp32 concurrency 16: ≥ 1.3x CTranslate2 fp32 (d) in answers/s"] == ("1.50x", True)
    assert found["concurrency 1: p50 latency ≤ 0.75x (a)"] == ("0.70x", True)
    assert found["open loop at 80%: p95 iteration-level ≤ 0.8x request-level"] == ("0.60x", True)
    assert found["int8 concurrency 16: ≥ CTranslate2 int8 (d') in answers/s"] == ("0.83x", False)
    assert found["server resident memory ≤ 1.3 GB (t5-base fp32; RSS summed over the processes)"] == (
        "1200 MB (PSS 1010 MB)", True)


def test_targets_whose_systems_did_not_run_say_so():
    data = bench_data()
    data["rows"] = [r for r in data["rows"] if not r["system"].startswith(("(c8)", "(d)"))]
    found = {t: (m, ok) for t, m, ok in targets(data)}
    assert found["int8 concurrency 16: ≥ CTranslate2 int8 (d') in answers/s"] == ("not measured", None)
    assert found["fp32 concurrency 16: ≥ 1.3x CTranslate2 fp32 (d) in answers/s"] == ("not measured", None)


def test_span_only_for_repeated_figures():
    assert span({"answers_per_s_min": 2.0, "answers_per_s_max": 2.4, "repetitions": 3}, "answers_per_s") == "2.0–2.4"
    assert span({"answers_per_s_min": 2.0, "answers_per_s_max": 2.0, "repetitions": 1}, "answers_per_s") == ""
    assert span({}, "p50_ms") == ""


def test_render_shows_every_system_the_spread_and_the_int8_agreement():
    text = render(bench_data(), "make bench")
    for name in SYSTEMS.values():
        assert f"| {name} | closed c=16 |" in text
    assert "| 2.2 | 2.0–2.4 |" in text and "400–450" in text
    assert "validation.int8_agreement | 0.97" in text and "took 15 minutes" in text and "CTranslate2 4.8.5" in text


def test_render_names_the_machine_the_run_recorded():
    data = {**bench_data(), "machine": {"cpus": 2, "cpu": "Intel(R) Xeon(R) Processor @ 2.80GHz", "int8_dot": "avx512_vnni"}}
    assert "Machine: 2 CPUs (Intel(R) Xeon(R) Processor @ 2.80GHz, int8 dot product: avx512_vnni), no GPU" in \
        render(data, "make bench")
    data["machine"] = {"cpus": 2, "cpu": "AMD EPYC 7B12", "int8_dot": None}
    assert "Machine: 2 CPUs (AMD EPYC 7B12, no int8 dot product (VNNI)), no GPU" in render(data, "make bench")


def test_render_links_the_plot_only_when_one_was_drawn():
    assert "(benchmarks.png)" in render(bench_data(), "make bench")
    assert "(benchmarks.png)" not in render({**bench_data(), "plotted": False}, "make bench")


def test_the_roofline_names_the_first_decoder_call_when_it_was_measured():
    roof = {**bench_data()["roofline"], "cross_projection_ms": 38.5}
    text = render({**bench_data(), "roofline": roof}, "make bench")
    assert ("encoder 140 ms per request (batch 1), the decoder's first call 38.5 ms more than a step" in text
            and "per request one encoder call and one first decoder call, not batched" in text)
    old = render(bench_data(), "make bench")  # results measured before the first call was counted
    assert "first call" not in old and "per request one encoder call, not batched" in old


def test_the_roofline_gives_the_floor_a_lone_answer_has_where_it_was_measured():
    roof = {**bench_data()["roofline"], "cross_projection_ms": 38.5, "step_weights_mb": 495.1, "read_gb_s": 21.0,
            "step_floor_ms": 23.6, "lone_answer_floor_ms": 400.0}
    data = {**bench_data(), "roofline": roof}
    text = render(data, "make bench")
    assert ("A decode step at batch 1 reads 495.1 MB of weights; at the 21.0 GB/s this machine reads memory "
            "(`python -m bench.memory_speed`) it takes at least 23.6 ms (measured: 25 ms). A lone answer, with the "
            "encoder and first calls as measured, takes at least **400.0 ms**.") in text
    found = {t: (m, ok) for t, m, ok in targets(data)}
    assert found["concurrency 1: p50 latency ≤ 0.75x (a)"] == ("0.70x (floor: 0.67x, see Roofline)", True)
    assert "reads memory" not in render(bench_data(), "make bench"), "results measured before the floor"


def test_the_report_shows_when_the_machine_slowed_down_under_a_system():
    data = bench_data()
    find(data["rows"], "(c)", "closed c=1")["graph_ms_per_step"] = 27.5
    data["rows"].append(row("cr", 1, 1.0, 900, graph_ms_per_step=50.0))
    text = render(data, "make bench")
    assert f"| {SYSTEMS['c']} | 27.5 | 25 | 1.10x |" in text
    assert f"| {SYSTEMS['cr']} | 50.0 | 25 | 2.00x **slower** |" in text
    assert "## Machine speed" not in render(bench_data(), "make bench"), "no counters at one client"


def test_memory_is_reported_as_summed_rss_and_as_pss():
    text = render(bench_data(), "make bench")
    assert f"| {SYSTEMS['c']} | 1200 | 1010 |" in text and "| 1200 MB (PSS 1010 MB) | yes |" in text
    old = {k: v for k, v in bench_data().items() if k != "pss_mb"}  # results written before PSS was measured
    assert f"| {SYSTEMS['c']} | 1200 |  |" in render(old, "make bench")


def test_memory_once_idle_is_judged_with_the_figure_right_after_the_load_beside_it():
    data = {**bench_data(), "settled_rss_mb": {SYSTEMS["c"]: 1280, SYSTEMS["d"]: 949},
            "settled_pss_mb": {SYSTEMS["c"]: 1190, SYSTEMS["d"]: 941}}
    found = {t: (m, ok) for t, m, ok in targets(data)}
    assert found["server resident memory ≤ 1.3 GB (t5-base fp32; RSS summed over the processes)"] == (
        "1280 MB idle after the load (PSS 1190 MB); 1200 MB right after it", True)
    text = render(data, "make bench")
    assert f"| {SYSTEMS['c']} | 1200 | 1010 | 1280 | 1190 |" in text and f"| {SYSTEMS['d']} | 950 | 940 | 949 | 941 |" in text
    data["settled_rss_mb"][SYSTEMS["c"]] = 1301
    assert not {t: ok for t, _, ok in targets(data)}[
        "server resident memory ≤ 1.3 GB (t5-base fp32; RSS summed over the processes)"]


def test_memory_of_a_live_process_has_pss_at_most_rss_and_a_gone_one_adds_nothing():
    rss, pss = memory_mb([os.getpid()])
    assert 0 < pss <= rss
    assert memory_mb([2 ** 22 + 7]) == (0, 0)  # a process that is gone adds nothing


def test_pages_two_processes_share_count_twice_in_summed_rss_and_once_in_summed_pss():
    shared = np.ones(32 * 2 ** 20 // 8)  # 32 MiB written before the fork: the same pages in both processes
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child only holds the pages until the parent has measured
        os.close(write)
        os.read(read, 1)
        os._exit(0)
    os.close(read)
    try:
        rss, pss = memory_mb([os.getpid(), child])
        alone_rss, _ = memory_mb([os.getpid()])
    finally:
        os.close(write)
        os.waitpid(child, 0)
    assert shared.sum() == shared.size
    assert rss - pss > 28, "the 32 MiB both processes map are counted in both RSS figures, once in PSS"
    assert rss - alone_rss > 28, "the child's RSS includes the pages it shares with the parent"


@pytest.mark.parametrize("url", ["localhost", "localhost:", ":8001", "localhost:grpc", "localhost:70000"])
def test_bench_latency_refuses_a_url_without_a_port_before_any_run(url, capsys):
    """The port finds the server's processes for the memory line: checked when the arguments
    are parsed, not after the timed runs."""
    with pytest.raises(SystemExit) as exit_:
        latency.parse_args(["--url", url])
    assert exit_.value.code == 2
    assert f"argument --url: must be host:port of the server's gRPC endpoint, got {url!r}" in capsys.readouterr().err


def test_the_open_loop_table_shows_the_scheduler_counters_only_where_recorded():
    header = "| system | mode | answers | errors | p50_ms | p95_ms | p99_ms | answers_per_s |"
    assert header + "\n" in render(bench_data(), "make bench"), "no counters recorded: no empty columns"
    data = bench_data()
    counters = {"mean_batch": 2.72, "graph_ms_per_step": 48.3, "encoder_ms_per_step": 43.6,
                "overhead_ms_per_step": 1.79}
    data["rows"][-2] = {**data["rows"][-2], **counters}
    text = render(data, "make bench")
    assert (header + " mean_batch | graph_ms_per_step | encoder_ms_per_step | overhead_ms_per_step |") in text
    assert f"| {SYSTEMS['c']} | open λ=3.60/s | 200 | 0 | 900 | 1500 | 2000 | 3.5 | 2.72 | 48.3 | 43.6 | 1.79 |" in text
    assert f"| {SYSTEMS['cr']} | open λ=3.60/s | 200 | 0 | 1000 | 2500 | 3000 | 3.5 |  |  |  |  |" in text


class Recorder:
    """A stand-in system for `open_loops`: answers at once and records which system was called when."""

    def __init__(self, name: str, calls: list):
        self.name, self.calls = name, calls

    def call(self, ids, new_tokens: int) -> int:
        self.calls.append((time.perf_counter(), self.name))
        return new_tokens

    def counters(self) -> dict[str, int]:  # as a baseline server's: one decoding call per request
        answered = sum(1 for _, name in self.calls if name == self.name)
        return {"calls": answered, "rows": answered}


def test_rounds_measure_every_system_at_every_level_in_turn():
    calls: list = []
    systems = {"c": Recorder(SYSTEMS["c"], calls), "d": Recorder(SYSTEMS["d"], calls)}
    plan = Plan([np.zeros((1, 3), np.int64)], new_tokens=4, levels=[1, 2], min_answers=4, per_client=1,
                repetitions=2)
    events: list = []
    rows = rounds(systems, plan, lambda index: events.append(("round", index, len(calls))),
                  lambda system: events.append(("last run", system.name, len(calls))))
    names = [name for _, name in sorted(calls)]
    blocks = [(name, sum(1 for _ in group)) for name, group in itertools.groupby(names)]
    # per round: level 1 (2 answers each), then level 2 (2 answers each), every system in turn
    assert blocks == [(SYSTEMS["c"], 2), (SYSTEMS["d"], 2)] * 4
    assert events == [("round", 0, 0), ("round", 1, 8), ("last run", SYSTEMS["c"], 14), ("last run", SYSTEMS["d"], 16)]
    assert [(r["system"], r["mode"], r["answers"], r["repetitions"], r["mean_batch"]) for r in rows] == [
        (SYSTEMS["c"], "closed c=1", 4, 2, 1.0), (SYSTEMS["c"], "closed c=2", 4, 2, 1.0),
        (SYSTEMS["d"], "closed c=1", 4, 2, 1.0), (SYSTEMS["d"], "closed c=2", 4, 2, 1.0)]


def test_open_loops_alternate_the_systems_window_by_window_with_the_same_arrivals():
    calls: list = []
    systems = [Recorder(SYSTEMS["c"], calls), Recorder(SYSTEMS["cr"], calls)]
    rows = open_loops(systems, [np.zeros((1, 3), np.int64)], rate=60.0, windows=3, seconds=0.3, new_tokens=4)
    names = [name for _, name in sorted(calls)]
    blocks = [name for i, name in enumerate(names) if i == 0 or names[i - 1] != name]
    assert blocks == [SYSTEMS["c"], SYSTEMS["cr"]] * 3
    sizes = [sum(1 for _ in group) for _, group in itertools.groupby(names)]
    assert sizes[0::2] == sizes[1::2], "each round gives both systems the same arrivals"
    assert [r["system"] for r in rows] == [SYSTEMS["c"], SYSTEMS["cr"]]
    for r, answers in zip(rows, (sum(sizes[0::2]), sum(sizes[1::2]))):
        assert r["answers"] == answers and r["errors"] == 0 and r["repetitions"] == 3
        assert len(r["p95_ms_windows"]) == 3 and r["mode"] == "open λ=60.00/s"


def test_the_report_says_how_the_open_loop_was_measured():
    data = bench_data()
    assert "windows of" not in render(data, "make bench"), "results without them (older runs) render as before"
    data.update(open_windows=3, open_seconds=40.0)
    data["rows"][-2] = {**data["rows"][-2], "p95_ms_windows": [1400, 1500, 1700]}
    text = render(data, "make bench")
    assert "3 windows of 40 s per system, the systems in turn" in text
    assert f"| {SYSTEMS['c']} | open λ=3.60/s | 200 | 0 | 900 | 1500 | 2000 | 3.5 | 1400, 1500, 1700 |" in text
    assert f"| {SYSTEMS['cr']} | open λ=3.60/s | 200 | 0 | 1000 | 2500 | 3000 | 3.5 |  |" in text


def test_the_report_says_when_the_systems_were_measured_in_rounds():
    data = {**bench_data(), "roofline_answers_per_s_runs": [4.6, 5.0, 4.8]}
    before = render(data, "make bench")
    assert "in a row." in before and "one run per round" not in before and "(c)'s settled figures" not in before
    assert "Measured at the start of each round" not in before
    text = render({**data, "schedule": "rounds"}, "make bench")
    assert "Each level is 3 runs, in each of which every client sends the same number of requests; one run per " \
           "round: in each round every level in turn, and at each level every system in turn" in text
    assert "Measured at the start of each round (4.6, 5.0, 4.8 answers/s); the figures above and the target are " \
           "the median round's." in text
    assert "(c)'s settled figures are read with the others stopped" in text
