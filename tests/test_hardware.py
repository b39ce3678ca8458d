"""The hardware table (rules/hardware.toml) and profdiag.hardware lookups."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from profdiag import hardware
from profdiag.errors import RulesError
from profdiag.rules_path import rules_dir

TB = 1e12


def test_rules_dir_holds_the_table() -> None:
    assert (rules_dir() / "hardware.toml").is_file()
    assert hardware.table_path() == rules_dir() / "hardware.toml"


def test_every_entry_is_complete() -> None:
    specs = hardware.known_gpus()
    assert len(specs) >= 13
    keys = [s.key for s in specs]
    assert len(set(keys)) == len(keys)
    for s in specs:
        assert s.source, s.key
        assert s.vendor in ("nvidia", "amd"), s.key
        assert s.patterns, s.key
        assert s.sm_count and s.sm_count > 0, s.key
        assert s.memory_bytes and s.memory_bytes >= 16 * 2**30, s.key
        assert 100e9 <= s.bandwidth <= 10 * TB, s.key
        # Every GPU does fp32 and bf16; a tensor-core dtype is never slower than fp32.
        assert s.has_peak("fp32") and s.has_peak("bf16"), s.key
        assert s.peak("bf16") >= s.peak("fp32"), s.key
        assert s.peak("fp16") == s.peak("bf16"), s.key
        if s.has_peak("fp8"):
            assert s.peak("fp8") >= s.peak("bf16"), s.key
        # Dense, not sparse: no GPU here does more than ~2.5 PFLOP/s of dense bf16 (the MI355X's
        # 2516.6 TFLOP/s is the largest; a sparse figure would be twice that).
        assert s.peak("bf16") <= 2.52e15, s.key
        # fp4 (nvfp4 / mxfp4) only where the hardware has it, and never slower than fp8.
        if s.has_peak("fp4"):
            assert s.has_peak("fp8") and s.peak("fp4") >= s.peak("fp8"), s.key


@pytest.mark.parametrize(
    "key, bf16_tflops, bw_tbs, extra",
    [
        ("a100-sxm4-40gb", 312, 1.555, {"fp32": 19.5e12, "tf32": 156e12, "sm_count": 108}),
        ("a100-sxm4-80gb", 312, 2.039, {"sm_count": 108}),
        ("a100-pcie-80gb", 312, 1.935, {}),
        ("h100-sxm", 989.5, 3.35, {"sm_count": 132, "memory_bytes": 80 * 2**30}),
        ("h100-pcie", 756, 2.0, {"sm_count": 114}),
        ("h200", 989.5, 4.8, {"memory_bytes": 141 * 2**30}),
        ("b200", 2250, 8.0, {}),
        ("l4", 121, 0.3, {}),
        ("l40s", 362.05, 0.864, {}),
        ("rtx-4090", 165.2, 1.008, {}),
        ("mi250x", 383, 3.2768, {"sm_count": 220}),
        ("mi300x", 1307.4, 5.3, {"sm_count": 304, "memory_bytes": 192 * 2**30}),
        ("mi325x", 1307.4, 6.0, {"memory_bytes": 256 * 2**30}),
        ("a10", 125, 0.6, {"fp32": 31.2e12, "int8": 250e12, "sm_count": 72}),
        ("h20", 148, 4.0, {"fp8": 296e12, "memory_bytes": 96 * 2**30}),
        ("gb200", 2500, 8.0, {"fp8": 5000e12, "fp4": 10000e12}),
        ("b300", 2250, 8.0, {"fp4": 13500e12, "memory_bytes": 288 * 2**30}),
        ("gb10", 125, 0.273, {"fp4": 500e12, "memory_bytes": 128 * 2**30}),
        ("rtx-5090", 209.5, 1.792, {"fp32": 104.8e12, "fp4": 1676e12, "sm_count": 170}),
        ("rtx-pro-6000", 500, 1.792, {"fp32": 125e12, "fp4": 2000e12, "sm_count": 188}),
        ("mi355x", 2516.6, 8.0, {"fp8": 5033.2e12, "fp4": 10066.4e12, "sm_count": 256}),
        ("radeon-ai-pro-r9700", 191, 0.64, {"fp32": 47.8e12, "fp8": 383e12, "sm_count": 64}),
    ],
)
def test_datasheet_numbers(key: str, bf16_tflops: float, bw_tbs: float, extra: dict) -> None:
    s = hardware.get(key)
    assert s.peak("bf16") == pytest.approx(bf16_tflops * 1e12)
    assert s.bandwidth == pytest.approx(bw_tbs * TB)
    for field, value in extra.items():
        if field in ("sm_count", "memory_bytes"):
            assert getattr(s, field) == value
        else:
            assert s.peak(field) == pytest.approx(value)


def test_no_fp8_on_ampere_or_cdna2() -> None:
    assert not hardware.get("a100").has_peak("fp8")
    assert not hardware.get("mi250x").has_peak("fp8")
    with pytest.raises(RulesError, match="no peak for dtype 'fp8'"):
        hardware.get("a100").peak("fp8")


def test_h100_ridge_is_about_295() -> None:
    assert hardware.get("h100").ridge("bf16") == pytest.approx(295, abs=1)


def test_measured_values_for_our_h100() -> None:
    s = hardware.get("h100-sxm")
    m = s.with_measured()
    assert m.peak("bf16") == pytest.approx(798e12)
    assert m.bandwidth == pytest.approx(3.0e12)
    assert m.ridge("bf16") == pytest.approx(266)
    # Dtypes without a measurement keep the datasheet peak; the original is unchanged.
    assert m.peak("fp8") == s.peak("fp8")
    assert s.peak("bf16") == pytest.approx(989.5e12)
    assert "measured" in m.source


@pytest.mark.parametrize(
    "device, key",
    [
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H100 NVL", "h100-nvl"),
        ("NVIDIA H100", "h100-sxm"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA B200", "b200"),
        ("NVIDIA A100-SXM4-40GB", "a100-sxm4-40gb"),
        ("NVIDIA A100-SXM4-80GB", "a100-sxm4-80gb"),
        ("NVIDIA A100-PCIE-40GB", "a100-pcie-40gb"),
        ("NVIDIA A100 80GB PCIe", "a100-pcie-80gb"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA GeForce RTX 4090", "rtx-4090"),
        ("AMD Instinct MI250X", "mi250x"),
        ("AMD Instinct MI300X", "mi300x"),
        ("AMD Instinct MI300X VF", "mi300x"),
        ("AMD Instinct MI325X", "mi325x"),
        ("gfx942", "mi300x"),
        ("gfx90a", "mi250x"),
        ("NVIDIA GB200", "gb200"),
        ("NVIDIA B300 SXM6 AC", "b300"),
        ("NVIDIA GB10", "gb10"),
        ("NVIDIA H20", "h20"),
        ("NVIDIA A10", "a10"),
        ("NVIDIA GeForce RTX 5090", "rtx-5090"),
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "rtx-pro-6000"),
        ("AMD Instinct MI355X", "mi355x"),
        ("gfx950", "mi355x"),
        ("AMD Radeon AI PRO R9700", "radeon-ai-pro-r9700"),
        ("gfx1201", "radeon-ai-pro-r9700"),
    ],
)
def test_lookup_by_device_name(device: str, key: str) -> None:
    spec = hardware.lookup(device)
    assert spec is not None and spec.key == key


@pytest.mark.parametrize("device", ["Tesla T4", "NVIDIA L40", "NVIDIA GeForce RTX 3090", "", None])
def test_lookup_unknown_is_none(device: str | None) -> None:
    assert hardware.lookup(device) is None


def test_lookup_hints_disambiguate() -> None:
    # ROCm shows each MI250X GCD as a device with 110 CUs.
    assert hardware.lookup("AMD Instinct MI250X", sm_count=110).key == "mi250x-gcd"
    assert hardware.lookup("AMD Instinct MI250X", sm_count=220).key == "mi250x"
    # gfx942 is both the MI300X and the MI325X: memory size decides.
    assert hardware.lookup("gfx942", memory_bytes=256 * 2**30).key == "mi325x"
    assert hardware.lookup("gfx942", memory_bytes=192 * 2**30).key == "mi300x"
    # A hint never overrides an unambiguous name.
    assert hardware.lookup("AMD Instinct MI300X", memory_bytes=256 * 2**30).key == "mi300x"
    # torch's totalGlobalMem for our H100 is a bit under 80 GiB.
    assert hardware.lookup("NVIDIA H100 80GB HBM3", sm_count=132, memory_bytes=85017493504).key == "h100-sxm"


@pytest.mark.parametrize(
    "name, key",
    [
        ("h100", "h100-sxm"),
        ("H100-SXM", "h100-sxm"),
        ("H100 SXM", "h100-sxm"),
        ("h100_pcie", "h100-pcie"),
        ("A100", "a100-sxm4-80gb"),
        ("MI300X", "mi300x"),
        ("rtx4090", "rtx-4090"),
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),  # a device name works too
        ("AMD Instinct MI300X VF", "mi300x"),
    ],
)
def test_get_by_key_or_alias(name: str, key: str) -> None:
    assert hardware.get(name).key == key


def test_get_unknown_lists_known_names() -> None:
    with pytest.raises(RulesError) as exc:
        hardware.get("tpu-v5")
    assert "tpu-v5" in str(exc.value)
    assert "h100-sxm" in str(exc.value) and "mi300x" in str(exc.value)


def test_spec_is_frozen_and_hashable() -> None:
    s = hardware.get("h100")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.bandwidth = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.peak_flops["bf16"] = 1.0  # type: ignore[index]
    assert hash(s) == hash(hardware.get("h100-sxm"))


def test_normalize_dtype() -> None:
    assert hardware.normalize_dtype("c10::BFloat16") == "bf16"
    assert hardware.normalize_dtype("c10::Half") == "fp16"
    assert hardware.normalize_dtype("float") == "fp32"
    assert hardware.normalize_dtype("c10::Float8_e4m3fn") == "fp8"
    assert hardware.normalize_dtype("signed char") == "int8"
    assert hardware.normalize_dtype("Scalar") is None
    # Block-scaled 4-bit formats all rate against the fp4 peak (0.5 byte per value).
    assert hardware.normalize_dtype("c10::Float4_e2m1fn_x2") == "fp4"
    assert hardware.normalize_dtype("nvfp4") == hardware.normalize_dtype("MXFP4") == "fp4"
    assert hardware.normalize_dtype("") is None


# --------------------------------------------------------------------------- user spec files


def _write(tmp_path: Path, text: str, name: str = "gpu.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_spec_file_top_level_layout(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        """
name = "My Accelerator"
vendor = "nvidia"
bandwidth_bytes_per_s = 2.0e12
sm_count = 100
source = "lab sheet"
[peak_flops]
fp16 = 312e12
bf16 = 312e12
fp32 = 19.5e12
""",
    )
    s = hardware.load_spec_file(p)
    assert s.name == "My Accelerator"
    assert s.ridge("fp16") == pytest.approx(156)
    assert s.sm_count == 100 and s.memory_bytes is None


def test_spec_file_table_layout(tmp_path: Path) -> None:
    text = """
[gpus.one]
name = "One"
bandwidth_bytes_per_s = 1e12
[gpus.one.peak_flops]
bf16 = 100e12
[gpus.two]
name = "Two"
aliases = ["deux"]
bandwidth_bytes_per_s = 2e12
[gpus.two.peak_flops]
bf16 = 100e12
"""
    p = _write(tmp_path, text)
    assert hardware.load_spec_file(p, "deux").key == "two"
    with pytest.raises(RulesError, match="pick one"):
        hardware.load_spec_file(p)
    with pytest.raises(RulesError, match="no GPU 'three'"):
        hardware.load_spec_file(p, "three")
    # The shipped table itself is a valid spec file.
    assert hardware.load_spec_file(hardware.table_path(), "h100").key == "h100-sxm"


@pytest.mark.parametrize(
    "text, message",
    [
        ("name = 'x'\n[peak_flops\n", "not valid TOML"),
        ("name = 'x'\n[peak_flops]\nbf16 = 1e12\n", "missing field 'bandwidth_bytes_per_s'"),
        ("name = 'x'\nbandwidth_bytes_per_s = -1.0\n[peak_flops]\nbf16 = 1e12\n", "must be positive"),
        ("name = 'x'\nbandwidth_bytes_per_s = 'fast'\n[peak_flops]\nbf16 = 1e12\n", "must be a number"),
        ("name = 'x'\nbandwidth_bytes_per_s = 1e12\n", "peak_flops"),
        ("name = 'x'\nbandwidth_bytes_per_s = 1e12\n[peak_flops]\nbf17 = 1e12\n", "unknown dtype"),
        ("name = 'x'\nbandwidth_bytes_per_s = 1e12\nmatch = ['(']\n[peak_flops]\nbf16 = 1e12\n", "bad match regex"),
    ],
)
def test_malformed_spec_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(RulesError, match=message):
        hardware.load_spec_file(_write(tmp_path, text))


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="not found"):
        hardware.load_spec_file(tmp_path / "nope.toml")


def test_resolve_order(tmp_path: Path) -> None:
    p = _write(tmp_path, "name = 'x'\nbandwidth_bytes_per_s = 1e12\n[peak_flops]\nbf16 = 1e12\n")
    assert hardware.resolve(spec_file=p, device_name="NVIDIA H100 80GB HBM3").name == "x"
    assert hardware.resolve(gpu="mi300x", device_name="NVIDIA H100 80GB HBM3").key == "mi300x"
    assert hardware.resolve(device_name="NVIDIA H100 80GB HBM3").key == "h100-sxm"
    assert hardware.resolve(device_name="Tesla T4") is None
