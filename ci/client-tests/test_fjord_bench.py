"""fjord-bench against a real fjord: a short workload whose JSON, .hgrm files
and plots are checked for sane figures, and `compare` of two runs."""

import json
import os
import subprocess
from pathlib import Path

from conftest import REPO

FJORD_BENCH = Path(os.environ.get("FJORD_BENCH_BIN", REPO / "target" / "debug" / "fjord-bench"))
RUN_DEADLINE_SECONDS = 120


def bench(*arguments):
    result = subprocess.run(
        [str(FJORD_BENCH), *arguments],
        capture_output=True,
        text=True,
        timeout=RUN_DEADLINE_SECONDS,
    )
    assert result.returncode == 0, f"fjord-bench {arguments} failed: {result.stderr}"
    return result.stdout


def short_run(broker, out, name, *arguments):
    bench("run", "--bootstrap-server", broker.bootstrap, "--output-dir", str(out),
          "--name", name, "--partitions", "4", "--producers", "2", "--consumers", "2",
          "--message-size", "256", "--warmup-secs", "1", "--duration-secs", "3", *arguments)
    return json.loads((out / f"{name}.json").read_text())


def check_figures(figures, rate):
    assert figures["messages"] > 0
    assert 0.8 * rate < figures["msgs_per_sec"] < 1.2 * rate, figures["msgs_per_sec"]
    assert figures["mb_per_sec"] > 0
    latency = figures["latency"]
    ordered = [latency[key] for key in ("p50_us", "p90_us", "p99_us", "p999_us", "p9999_us",
                                        "max_us")]
    assert 0 < ordered[0], latency
    assert ordered == sorted(ordered), latency
    assert latency["max_us"] < 10_000_000, "a 10 s latency on an idle loopback broker"
    assert figures["percentiles"][-1]["percentile"] == 100.0


def test_a_rate_limited_run_reports_sane_throughput_and_latency(broker, tmp_path):
    """A 3 s run at 1000 msg/s acknowledges and consumes close to the target
    rate, with ordered non-zero percentiles, a throughput sample every
    second, and HdrHistogram-format .hgrm files and SVG plots beside the JSON;
    guards against a rate limiter, a meter, or an output file gone wrong."""
    result = short_run(broker, tmp_path, "rate-limited", "--rate", "1000", "--compression",
                       "lz4", "--payload-randomness", "0.5")

    check_figures(result["publish"], 1000)
    check_figures(result["end_to_end"], 1000)
    assert result["end_to_end"]["latency"]["p50_us"] >= result["publish"]["latency"]["p50_us"] * 0.5
    assert result["workload"]["compression"] == "lz4"
    measured = [point for point in result["series"] if not point["warmup"]]
    assert len(measured) >= 2 and all(point["publish_msgs_per_sec"] > 0 for point in measured)

    hgrm = (tmp_path / "rate-limited-publish.hgrm").read_text().splitlines()
    assert hgrm[0].split() == ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
    assert hgrm[-2].startswith("#[Max     =")
    for plot in ["rate-limited-latency.svg", "rate-limited-throughput.svg"]:
        assert (tmp_path / plot).read_text().startswith("<svg")


def test_compare_sets_two_runs_side_by_side(broker, tmp_path):
    """compare prints each figure of two runs with the second's ratio to the
    first and draws their curves on one plot; guards against a result
    format that compare cannot read back."""
    short_run(broker, tmp_path, "slow", "--rate", "500")
    short_run(broker, tmp_path, "fast", "--rate", "1500")

    table = bench("compare", str(tmp_path / "slow.json"), str(tmp_path / "fast.json"),
                  "--output-dir", str(tmp_path))

    rows = {line[:20].strip(): line[20:].split() for line in table.splitlines()[1:]}
    slow, fast, ratio = rows["publish msg/s"]
    assert 2.5 < float(ratio.rstrip("x")) < 3.5, rows["publish msg/s"]
    assert "e2e p99.99 ms" in rows
    plot = (tmp_path / "compare-publish-latency.svg").read_text()
    assert plot.count("<polyline") == 2
