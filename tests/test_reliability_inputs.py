"""The edge checks that keep bad values out of the engine's state, process-free.

Each test feeds what an attacker or a careless caller sends: digits Python's `int()`
accepts but no HTTP client means, nan and inf, encoded traversal, a zip bomb.
"""

from __future__ import annotations

import signal
import zipfile
from pathlib import Path

import pytest

from jupyter_torchserve.archive.errors import ArchiveTooLarge
from jupyter_torchserve.archive.reader import extract
from jupyter_torchserve.config import EngineConfig
from jupyter_torchserve.engine import deaths, limits, params
from jupyter_torchserve.engine.errors import ApiError
from jupyter_torchserve.engine.urls import archive_name, check_path


@pytest.mark.parametrize(
    "raw", ["1_000", "+1", "\u0661\u0662", "\uff11\uff12", " 1", "1 ", "0x10", "1e3", "", "1.0"]
)
def test_integers_are_plain_ascii_digits(raw):
    with pytest.raises(ApiError) as e:
        params.integer("min_worker", raw)
    assert e.value.status == 400 and "min_worker" in e.value.message


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "NaN", "1e400", float("nan"), float("inf")])
def test_seconds_are_finite(raw):
    with pytest.raises(ApiError) as e:
        params.seconds("response_timeout", raw)
    assert e.value.status == 400


def test_values_outside_their_range_are_refused_and_inside_taken():
    for name, raw in [("batch_size", "0"), ("response_timeout", "0"), ("timeout", "-2")]:
        with pytest.raises(ApiError):
            params.integer(name, raw) if name == "batch_size" else params.seconds(name, raw)
    assert params.integer("min_worker", "12") == 12
    assert params.integer("limit", "-5") == -5
    assert params.seconds("response_timeout", "0.5") == 0.5
    assert params.seconds("timeout", "-1") == -1.0
    with pytest.raises(ApiError):
        params.integer("min_worker", "99999999999999999999")  # 20 digits: past the range


def test_a_bool_is_not_a_number():
    with pytest.raises(ApiError):
        params.integer("batch_size", True)


@pytest.mark.parametrize(
    "path",
    ["/a/%2e%2e/b.mar", "/a/%252e%252e/b.mar", "/a/..%2fb.mar", "/a/%2E./b.mar", "/a/x%00.mar"],
)
def test_encoded_traversal_is_refused(path):
    with pytest.raises(ApiError) as e:
        check_path("http://h" + path, path)
    assert e.value.status == 400


def test_archive_names_are_the_last_segment_and_bounded():
    assert archive_name("http://h/m/a%20b.mar", "/m/a%20b.mar") == "a b.mar"
    with pytest.raises(ApiError):
        archive_name("http://h/" + "a" * 300 + ".mar", "/" + "a" * 300 + ".mar")
    with pytest.raises(ApiError):
        archive_name("http://h/", "/")


def _bomb(path: Path, members: int, size: int) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("MAR-INF/MANIFEST.json", '{"model": {"modelName": "b", "handler": "h.py"}}')
        for i in range(members):
            z.writestr(f"m{i}.bin", b"\0" * size)
    return path


def test_extraction_is_refused_before_writing_past_the_limit(tmp_path):
    bomb = _bomb(tmp_path / "bomb.mar", 5, 1 << 20)  # 5 MiB of zeros, a few KiB zipped
    cache = tmp_path / "cache"
    with pytest.raises(ArchiveTooLarge) as e:
        extract(str(bomb), str(cache), max_total_size=2 << 20, limit_name="max_archive_size")
    assert "max_archive_size" in str(e.value) and not e.value.disk
    written = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    assert written == 0  # the declared sizes alone refused it


class _V:
    def __init__(self, name: str, n: int) -> None:
        self.name, self.version, self.min_workers = name, "1.0", n


def test_worker_caps_refuse_with_400_per_model_and_507_per_engine():
    config = EngineConfig(max_workers_per_model=4, max_workers=6)
    with pytest.raises(ApiError) as e:
        limits.check_workers(config, [], None, 5, 5)
    assert e.value.status == 400 and "max_workers_per_model" in e.value.message
    others = [_V("a", 4)]
    limits.check_workers(config, others, None, 2, 2)
    with pytest.raises(ApiError) as e:
        limits.check_workers(config, others, None, 3, 3)
    assert e.value.status == 507 and "max_workers" in e.value.message
    limits.check_workers(config, others, others[0], 4, 4)  # its own workers do not count twice


def test_default_caps_follow_the_machine():
    config = EngineConfig()
    assert 2 <= limits.engine_cap(config, cpus=2) <= 16
    assert limits.per_model_cap(config, cpus=2) <= limits.engine_cap(config, cpus=2)


def test_a_dead_workers_batch_is_judged_by_how_it_died(monkeypatch):
    """Its own exit or crash: answered, not retried; killed from outside: retried (None);
    SIGKILL while the kernel's OOM-kill count rose: 507."""
    counts = iter([5, 5, 6])
    monkeypatch.setattr(deaths, "read_oom_kills", lambda path="": next(counts))
    watch = deaths.OomWatch()  # reads 5
    judge = lambda code, ours=False: deaths.classify("m", code, ours, "m.log", watch).error  # noqa: E731
    assert judge(3).status == 503 and "code 3" in judge(3).message
    assert "SIGSEGV" in judge(-signal.SIGSEGV).message
    assert judge(-signal.SIGTERM) is None
    assert judge(-signal.SIGKILL) is None  # count still 5: someone's kill -9
    assert judge(-signal.SIGKILL, ours=True) is None
    oom = judge(-signal.SIGKILL)  # the count went to 6
    assert oom.status == 507 and "OOM" in oom.message
