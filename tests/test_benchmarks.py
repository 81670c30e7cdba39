"""benchmarks.step_time: float32 and bfloat16 side by side in one run, and its argument errors."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _step_time(*args):
    return subprocess.run([sys.executable, "-m", "benchmarks.step_time", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_step_time_both_precisions_side_by_side(tmp_path):
    out = tmp_path / "bench.json"
    r = _step_time("--frameworks", "jaxres", "--dtype", "float32,bfloat16", "--cases", "0", "--batch", "4",
                   "--steps", "2", "--rounds", "1", "--json", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["dtypes"] == ["float32", "bfloat16"]
    assert set(res["gemm_peak_gflops"]) == {"float32", "bfloat16"}
    assert all(v["value"] > 0 for v in res["gemm_peak_gflops"].values())
    (case,) = res["cases"]
    rows = case["frameworks"]
    assert {(r["framework"], r["dtype"]) for r in rows.values()} == {("jaxres", "float32"), ("jaxres", "bfloat16")}
    assert all(r["steps"] == 2 and r["median_s"] > 0 for r in rows.values())
    ratio = case["bfloat16_over_float32"]["jaxres"]
    assert ratio == rows["jaxres bfloat16"]["median_s"] / rows["jaxres float32"]["median_s"]
    assert case["jaxres_over_fastest_peer"] == {}  # no peer ran
    # the summary table names both precisions and the command that made it
    assert "| case | jaxres float32 | jaxres bfloat16 |" in r.stdout
    assert "python -m benchmarks.step_time --frameworks jaxres --dtype float32,bfloat16" in r.stdout
    assert res["cpu"]["cpus"] >= 1 and res["cpu"]["model"]


def test_step_time_bad_dtype_is_one_line():
    r = _step_time("--frameworks", "jaxres", "--dtype", "float16")
    assert r.returncode == 2
    assert "--dtype 'float16'" in r.stderr and "Traceback" not in r.stderr
