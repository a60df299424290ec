"""What a load test reports, from levels made here (no process): table, picture, choice of
worker count, plain data; and the request it sends on each protocol."""

from __future__ import annotations

import json

import pytest

from jupyter_torchserve import loadgen, loadtest
from jupyter_torchserve.loadtest_view import BenchResult, Level


def level(workers: int | None, c: int, rps: float, p99: float, errors: int = 0) -> Level:
    return Level(
        workers=workers,
        concurrency=c,
        requests=int(rps * 2),
        rps=rps,
        p50_ms=p99 / 3,
        p90_ms=p99 / 2,
        p99_ms=p99,
        mean_ms=p99 / 3,
        max_ms=p99 * 2,
        errors=errors,
        statuses={"200": int(rps * 2) - errors, **({"503": errors} if errors else {})},
        failures={},
        seconds=2.0,
        generator_cpu_cores=0.4,
        server_cpu_cores=1.2,
        engine_requests=int(rps * 2),
        batch_sizes={1: 10, 4: 5},
    )


def scaling_result(slo: float | None = 50.0) -> BenchResult:
    return BenchResult(
        model="m",
        version=None,
        protocol="torchserve",
        levels=[
            level(1, 1, 100, 12),
            level(1, 8, 300, 80),
            level(2, 1, 100, 11),
            level(2, 8, 550, 40),
            level(4, 1, 95, 11),
            level(4, 8, 560, 35),
        ],
        slo_ms=slo,
        duration=2.0,
    )


def test_recommended_workers_is_the_fewest_within_the_slo() -> None:
    best, why = scaling_result().recommended_workers()
    assert best == 2
    assert "2 workers" in why and "50 ms" in why
    assert scaling_result(slo=10).recommended_workers()[0] is None
    assert scaling_result(slo=None).recommended_workers()[0] is None


def test_a_level_with_errors_is_never_chosen() -> None:
    r = scaling_result()
    r.levels[3] = level(2, 8, 550, 40, errors=3)
    assert r.recommended_workers()[0] == 4


def test_table_text_html_and_rows() -> None:
    r = scaling_result()
    text = repr(r)
    assert text.splitlines()[0] == "Load test of m over torchserve, 2 s per level"
    assert "req/s" in text and "p99 ms" in text and "gen CPU" in text
    assert "2 workers: the fewest" in text
    page = r._repr_html_()
    assert "<table" in page and "data:image/png;base64," in page
    rows = r.rows
    assert [row["workers"] for row in rows] == [1, 1, 2, 2, 4, 4]
    assert rows[1]["req_per_s"] == 300 and rows[1]["p99_ms"] == 80
    assert rows[0]["mean_batch"] == pytest.approx((1 * 10 + 4 * 5) / 15)
    json.dumps(rows)  # plain data


def test_to_dataframe_or_plain_rows() -> None:
    try:
        import pandas as pd
    except ImportError:
        assert scaling_result().to_dataframe() == scaling_result().rows
        return
    df = scaling_result().to_dataframe()
    assert isinstance(df, pd.DataFrame)
    assert list(df["concurrency"]) == [1, 8, 1, 8, 1, 8]


def test_picture_has_latency_throughput_and_scaling_axes() -> None:
    fig = scaling_result().figure()
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["Latency percentiles", "Throughput", "Scaling curve"]
    lat, thr, sc = fig.axes
    assert lat.get_ylabel() == "latency (ms)" and thr.get_ylabel() == "throughput (req/s)"
    assert sc.get_xlabel() == "workers"
    assert lat.get_legend() is not None and sc.get_legend() is not None
    assert scaling_result().png()[:8] == b"\x89PNG\r\n\x1a\n"
    one = BenchResult("m", None, "v2", [level(None, 1, 10, 5), level(None, 4, 30, 9)])
    assert len(one.figure().axes) == 2


def test_live_view_text_mode_prints_one_line_per_level(capsys: pytest.CaptureFixture[str]) -> None:
    from jupyter_torchserve.loadtest_view import BenchProgress, live_chart_png

    view = BenchProgress("Load test of m", mode="text")
    view({"type": "level", "index": 0, "of": 1, "workers": None, "c": 4})
    view(
        {
            "type": "progress",
            "index": 0,
            "of": 1,
            "workers": None,
            "c": 4,
            "rps": 10.0,
            "p99_ms": 3.0,
            "elapsed": 0.5,
        }
    )
    view.level_done(level(None, 4, 30, 9))
    view.finish()
    out = capsys.readouterr().out
    assert "Load test of m" in out and "4 connections: 30 req/s" in out
    assert live_chart_png(view.points, "t")[:4] == b"\x89PNG"


def test_percentiles_by_nearest_rank() -> None:
    values = list(range(1, 101))
    assert loadgen.percentile(values, 50) == 50
    assert loadgen.percentile(values, 99) == 99
    assert loadgen.percentile([], 50) is None
    assert loadgen.summary_ms([0.001, 0.002])["max_ms"] == pytest.approx(2.0)


def test_batch_size_buckets_between_two_readings() -> None:
    before = {"1.0": 5, "2.0": 5, "4.0": 7, "+Inf": 7}
    after = {"1.0": 15, "2.0": 18, "4.0": 30, "+Inf": 30}
    assert loadtest._bucket_counts(before, after) == {1: 10, 2: 3, 4: 10}


def test_request_on_each_protocol() -> None:
    ts = loadtest.build_request("m", {"a": 1})
    assert ts.path == "/predictions/m" and json.loads(ts.body) == {"a": 1}
    v1 = loadtest.build_request("m", [[1.0, 2.0]], "v1")
    assert v1.path == "/v1/models/m:predict" and json.loads(v1.body) == {"instances": [[1.0, 2.0]]}
    v2 = loadtest.build_request("m", [[1.0, 2.0]], "v2", version="2.0")
    assert v2.path == "/v2/models/m/versions/2.0/infer"
    assert json.loads(v2.body)["inputs"][0]["shape"] == [1, 2]
    with pytest.raises(ValueError, match="protocol must be one of"):
        loadtest.build_request("m", 1, "smtp")


def test_options_are_checked_once_when_made() -> None:
    opts = loadtest.BenchOptions(concurrency=[1, 8], workers=[2])
    assert opts.concurrency == (1, 8) and opts.workers == (2,)
    with pytest.raises(ValueError, match="concurrency must be"):
        loadtest.BenchOptions(concurrency=[0])
    with pytest.raises(ValueError, match="workers must be"):
        loadtest.BenchOptions(workers=[1, -2])
    with pytest.raises(ValueError, match="duration must be positive"):
        loadtest.BenchOptions(duration=0)
    assert loadtest.BenchOptions(duration=0, requests=5).requests == 5
