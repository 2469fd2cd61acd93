"""Energy meters: the tegrastats parser on real Jetson Nano logs, Xavier/Orin formats, RAPL wrap-around."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import pytest

from nni_hwaware.errors import HwAwareError
from nni_hwaware.measure.energy import (
    CPU_RAILS,
    GPU_RAILS,
    TOTAL_RAILS,
    RaplMeter,
    create_meter,
    integrate_samples,
    parse_tegrastats,
    parse_tegrastats_line,
    pick_rail,
)

NANO = Path(__file__).parents[1] / ".." / "shared" / "data" / "jetson_nano"
SAMPLES = NANO / "tegrastats_samples"


def _nano_logs() -> list[Path]:
    if not SAMPLES.is_dir():
        pytest.skip(f"the Jetson Nano tegrastats samples are not beside the repository ({SAMPLES.resolve()})")
    return sorted(SAMPLES.glob("stats_*.txt"))


def _stage_csvs() -> pd.DataFrame:
    frames = [pd.read_csv(p) for p in sorted(NANO.glob("*/*.csv"))]
    return pd.concat(frames).drop_duplicates("Model Name").set_index("Model Name")


def test_every_real_nano_log_parses_into_the_three_rails():
    logs = _nano_logs()
    assert len(logs) >= 10
    for log in logs:
        samples = parse_tegrastats(log.read_text().splitlines())
        assert len(samples) >= 50, log.name  # one line a second over 60 s
        for sample in samples:
            assert set(sample) == {"POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"}
            assert 0 < sample["POM_5V_GPU"] < sample["POM_5V_IN"] < 20000
        assert pick_rail(samples[0], TOTAL_RAILS) == "POM_5V_IN"
        assert pick_rail(samples[0], GPU_RAILS) == "POM_5V_GPU"
        assert pick_rail(samples[0], CPU_RAILS) == "POM_5V_CPU"


def test_parser_reproduces_the_published_averages_and_totals():
    """The stage CSVs hold Avrg_POM_5V_* (mean mW) and Total_POM_5V_* (sum of the 1 s samples, i.e. mJ)."""
    logs = _nano_logs()
    table = _stage_csvs()
    checked = 0
    for log in logs:
        name = log.name[len("stats_"):-len("_mode0_60.txt")]
        if name not in table.index:
            continue
        row = table.loc[name]
        samples = parse_tegrastats(log.read_text().splitlines())
        energy = integrate_samples(samples, interval_s=1.0)
        for rail in ("POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"):
            assert energy[rail] == pytest.approx(row[f"Total_{rail}"], rel=1e-9), (name, rail)
            assert energy[rail] / len(samples) == pytest.approx(row[f"Avrg_{rail}"], rel=1e-9), (name, rail)
        # and the published energy per inference follows from it
        assert energy["POM_5V_GPU"] / row["num_inferences"] == pytest.approx(row["GPU_energy_per_inference"])
        checked += 1
    assert checked >= 10


def test_xavier_and_orin_lines_with_mw_units():
    orin = ("RAM 2448/30536MB (lfb 6707x4MB) SWAP 0/15268MB (cached 0MB) CPU [1%@729,off,off] EMC_FREQ 0%@2133 "
            "GR3D_FREQ 0%@[305,0] VIC_FREQ 729 APE 174 CV0@-256C CPU@45.5C Tboard@34C SOC2@41.968C "
            "VDD_GPU_SOC 2000mW/2000mW VDD_CPU_CV 400mW/410mW VIN_SYS_5V0 2800mW/2790mW NC 0mW/0mW "
            "VDDQ_VDD2_1V8AO 503mW/503mW")
    rails = parse_tegrastats_line(orin)
    assert rails["VDD_GPU_SOC"] == (2000.0, 2000.0)
    assert rails["VDD_CPU_CV"] == (400.0, 410.0)
    assert rails["VIN_SYS_5V0"] == (2800.0, 2790.0)
    assert "RAM" not in rails and "SWAP" not in rails and "APE" not in rails
    assert pick_rail(rails, TOTAL_RAILS) == "VIN_SYS_5V0"
    assert pick_rail(rails, GPU_RAILS) == "VDD_GPU_SOC"
    xavier_nx = "RAM 2155/7764MB CPU [2%@1190,1%@1190] VDD_IN 3905/3905 VDD_CPU_GPU_CV 490/490 VDD_SOC 1226/1226"
    rails = parse_tegrastats_line(xavier_nx)
    assert pick_rail(rails, TOTAL_RAILS) == "VDD_IN" and rails["VDD_SOC"] == (1226.0, 1226.0)
    agx_xavier = "RAM 1/15MB GPU 0/0 CPU 311/311 SOC 1243/1243 CV 0/0 VDDRQ 311/311 SYS5V 1744/1744"
    rails = parse_tegrastats_line(agx_xavier)
    assert rails["CPU"] == (311.0, 311.0) and rails["SYS5V"] == (1744.0, 1744.0)


def _fake_powercap(root: Path, energy_uj: int, max_range: int) -> None:
    domain = root / "intel-rapl:0"
    domain.mkdir(parents=True, exist_ok=True)
    (domain / "energy_uj").write_text(f"{energy_uj}\n")
    (domain / "max_energy_range_uj").write_text(f"{max_range}\n")
    sub = root / "intel-rapl:0:0"  # a sub-domain (core) must not be counted twice
    sub.mkdir(exist_ok=True)
    (sub / "energy_uj").write_text("5\n")


def test_rapl_counts_packages_and_handles_wrap_around(tmp_path):
    """A powercap folder laid out as the kernel does (the real one is root-only or absent on this VM)."""
    _fake_powercap(tmp_path, energy_uj=999_000_000, max_range=1_000_000_000)
    meter = RaplMeter(tmp_path)
    assert [d.name for d in meter.domains] == ["intel-rapl:0"]
    meter.start()
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("2000000\n")  # wrapped past the 1000 J range
    reading = meter.stop()
    assert reading.energy_mj == pytest.approx((1_000_000_000 - 999_000_000 + 2_000_000) / 1e3)


def test_missing_meters_are_none_or_clear_errors(tmp_path):
    assert create_meter("none") is None
    with pytest.raises(HwAwareError, match="RAPL"):
        RaplMeter(tmp_path)
    with pytest.raises(HwAwareError, match="unknown energy meter"):
        create_meter("wattmeter")
    if not Path("/sys/class/powercap/intel-rapl:0/energy_uj").exists():
        with pytest.raises(HwAwareError):
            create_meter("rapl")


def test_the_package_tegrastats_meter_reads_the_board_total_rail(tmp_path, monkeypatch):
    """The local meter (the agent's, behind our interface) on a replayed Nano log: the total input rail by
    default, every rail in ``rails_mj``; a missing tegrastats is a one-line HwAwareError."""
    from nni_hwaware.measure.energy import TegrastatsMeter

    log = _nano_logs()[0]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "tegrastats").symlink_to(Path(__file__).resolve().parent / "fake_tegrastats.py")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_TEGRASTATS_LOG", str(log))
    lines = log.read_text().splitlines()
    meter = TegrastatsMeter(interval_ms=5)
    try:
        meter.start()
        deadline = time.monotonic() + 30
        while meter._meter.samples_seen < len(lines) and time.monotonic() < deadline:
            time.sleep(0.02)
        reading = meter.stop()
    finally:
        meter.close()
    totals = integrate_samples(parse_tegrastats(lines), 0.005)
    assert reading.energy_mj == pytest.approx(totals["POM_5V_IN"])
    assert reading.rails_mj == pytest.approx(totals)
    assert reading.duration_s == pytest.approx(len(lines) * 0.005)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(HwAwareError, match="tegrastats is not on PATH"):
        TegrastatsMeter()
