"""gate: budgets on real ONNX exports of a trained net, JUnit/JSON/exit code agreement, baseline
regressions, measured latency locally and over a real loopback sshd, and every bad input."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from edgeprune.cli.main import main
from edgeprune.release.gate import GateBudgets, gate, load_baseline
from tests._sshd import SSHServer

FAST = ["--runs", "10", "--warmup", "2", "--repeats", "0"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shipped, trained MNIST CNN: one-file ONNX, ONNX with external data, a pruned dir."""
    import torch

    import edgeprune
    from edgeprune.artifacts.onnx_export import export_onnx

    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    root = tmp_path_factory.mktemp("gate-models")
    model = edgeprune.load_model("builtin:mnist-cnn")
    x = torch.zeros(1, 1, 28, 28)
    export_onnx(model, x, root / "single" / "mnist.onnx", external_data=False)
    export_onnx(model, x, root / "ext" / "mnist.onnx", external_data=True)
    edgeprune.save(model, root / "pruned", spec="builtin:mnist-cnn", input_shape=(1, 1, 28, 28))
    return {"single": root / "single" / "mnist.onnx", "ext": root / "ext" / "mnist.onnx",
            "pruned": root / "pruned"}


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EDGEPRUNE_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.chdir(tmp_path)  # no stray ./edgeprune-gate.toml


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict, str]:
    code = main(["gate", *argv, "--format", "json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], code: int) -> str:
    rc, data, err = _run(capsys, *argv)
    assert rc == code, (data, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeprune: error:"), err
    assert data["error"]["message"] in lines[0]
    return lines[0]


def _by_budget(data: dict, artifact: str | None = None) -> dict[str, dict]:
    return {c["budget"]: c for c in data["checks"]
            if artifact is None or c["artifact"] == artifact}


# --- static budgets ---------------------------------------------------------------------------


def test_onnx_macs_and_params_match_the_torch_model(exported: dict[str, Path]) -> None:
    import torch

    import edgeprune
    from edgeprune.models import cost

    model = edgeprune.load_model("builtin:mnist-cnn")
    macs = cost.count_macs(model, torch.zeros(1, 1, 28, 28))
    result = gate([exported["single"], exported["pruned"]],
                  GateBudgets(max_macs=macs, max_params=cost.count_params(model)))
    onnx_m, pruned_m = result.artifacts
    assert onnx_m.macs == pruned_m.macs == macs == 4_241_152
    assert onnx_m.params == pruned_m.params == cost.count_params(model)
    assert result.passed and {c.status for c in result.checks} == {"pass"}
    tighter = gate([exported["single"]], GateBudgets(max_macs=macs - 1))
    assert not tighter.passed and tighter.checks[0].margin == -1


def test_size_counts_external_data(exported: dict[str, Path]) -> None:
    ext = exported["ext"]
    data_file = ext.with_name(ext.name + ".data")
    assert data_file.is_file() and data_file.stat().st_size > ext.stat().st_size
    result = gate([ext], GateBudgets(max_model_size_mb=1.0))
    (m,) = result.artifacts
    assert m.size_bytes == ext.stat().st_size + data_file.stat().st_size
    assert len(m.files) == 2 and m.size_bytes > 1_000_000
    assert not result.passed and "exceeds max_model_size_mb" in result.checks[0].reason
    # a budget between the .onnx alone and .onnx + .data: only counting the data fails it
    mid = (ext.stat().st_size + m.size_bytes) / 2 / 1e6
    assert not gate([ext], GateBudgets(max_model_size_mb=mid)).passed


def test_shipped_profile_passes_and_custom_profile_fails(
        exported: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, data, _ = _run(capsys, "--profile", "rpi4", str(exported["single"]))
    assert code == 0 and data["passed"] and data["exit_code"] == 0 and data["profile"] == "rpi4"
    checks = _by_budget(data)
    assert checks["max_model_size_mb"]["status"] == "pass"
    assert checks["max_model_size_mb"]["limit"] == 25.0
    assert checks["max_latency_ms"]["status"] == "skipped"
    assert checks["max_latency_ms"]["reason"] == "skipped (no --target)"
    assert checks["max_peak_rss_mb"]["status"] == "skipped"

    profile = tmp_path / "tiny-board.toml"
    profile.write_text('description = "a tiny board"\ninput_shape = [1, 1, 28, 28]\n'
                       "[budgets]\nmax_model_size_mb = 1.0\n")
    code, data, _ = _run(capsys, "--profile", str(profile), str(exported["single"]),
                         "--params", "1M")
    assert code == 4 and not data["passed"] and data["exit_code"] == 4
    checks = _by_budget(data)
    assert checks["max_model_size_mb"]["status"] == "fail"
    assert checks["max_model_size_mb"]["margin"] < 0
    assert "mnist.onnx: size on disk 1.70" in checks["max_model_size_mb"]["reason"]
    assert checks["max_params"]["status"] == "pass"  # flag budget added to the profile's


def test_text_table_has_one_reason_per_failure(
        exported: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["gate", str(exported["single"]), "--size-mb", "1", "--macs", "1M",
                 "--params", "10M"])
    out = capsys.readouterr().out
    assert code == 4
    fails = [ln for ln in out.splitlines() if ln.startswith("FAIL ")]
    assert len(fails) == 2 and any("max_macs" in f for f in fails)
    assert "FAILED: 1 passed, 2 failed, 0 skipped (exit 4)" in out
    assert "margin" in out.splitlines()[1]


def test_junit_json_and_exit_code_agree(
        exported: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junit = tmp_path / "gate.xml"
    code, data, _ = _run(capsys, "--profile", "rpi4", str(exported["single"]),
                         str(exported["pruned"]), "--macs", "1M", "--junit", str(junit))
    assert code == 4 == data["exit_code"]
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [str(exported["single"]), str(exported["pruned"])]
    for suite in suites:
        cases = suite.findall("testcase")
        json_checks = [c for c in data["checks"] if c["artifact"] == suite.get("name")]
        assert [c.get("name") for c in cases] == [c["budget"] for c in json_checks]
        for case, check in zip(cases, json_checks, strict=True):
            failure, skipped = case.find("failure"), case.find("skipped")
            assert (failure is not None) == (check["status"] == "fail")
            assert (skipped is not None) == (check["status"] == "skipped")
            if failure is not None:
                assert failure.get("message") == check["reason"]
    assert int(root.get("failures")) == data["counts"]["fail"] == 2  # MACs on both
    assert int(root.get("skipped")) == data["counts"]["skipped"]
    assert int(root.get("tests")) == len(data["checks"])
    # an existing JUnit file is not overwritten without --force
    _one_line_error(capsys, [str(exported["single"]), "--size-mb", "25", "--junit", str(junit)],
                    1)
    assert _run(capsys, str(exported["single"]), "--size-mb", "25", "--junit", str(junit),
                "--force")[0] == 0
    assert ET.parse(junit).getroot().get("failures") == "0"


def test_strict_turns_skipped_into_failures(
        exported: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, data, _ = _run(capsys, str(exported["single"]), "--size-mb", "25", "--latency-ms",
                         "100", "--strict")
    assert code == 4
    check = _by_budget(data)["max_latency_ms"]
    assert check["status"] == "fail" and "no --target" in check["reason"]


# --- gate files --------------------------------------------------------------------------------


def test_gate_file_in_current_directory(
        exported: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "edgeprune-gate.toml").write_text(
        'profile = "rpi4"\n[budgets]\nmax_model_size_mb = 1.0\nmax_macs = 5_000_000\n')
    code, data, err = _run(capsys, str(exported["single"]))
    assert code == 4 and data["profile"] == "rpi4" and "using gate file" in err
    checks = _by_budget(data)
    assert checks["max_model_size_mb"]["limit"] == 1.0 and checks["max_model_size_mb"]["status"] \
        == "fail"
    assert checks["max_macs"]["status"] == "pass"
    assert checks["max_latency_ms"]["limit"] == 100.0  # from the profile
    # flags override the gate file; --no-gate-file ignores it
    assert _run(capsys, str(exported["single"]), "--size-mb", "2")[0] == 0
    code, data, _ = _run(capsys, str(exported["single"]), "--no-gate-file", "--size-mb", "2")
    assert code == 0 and "max_macs" not in _by_budget(data)


def test_gate_file_typo_is_one_line_with_did_you_mean(
        exported: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "limits.toml"
    bad.write_text("[budgets]\nmax_modle_size_mb = 25\n")
    line = _one_line_error(capsys, [str(exported["single"]), "--gate-file", str(bad)], 1)
    assert "budgets.max_modle_size_mb" in line and "did you mean 'max_model_size_mb'" in line
    bad.write_text("[budgets]\nmax_macs = -5\n")
    line = _one_line_error(capsys, [str(exported["single"]), "--gate-file", str(bad)], 1)
    assert "budgets.max_macs" in line and "positive" in line
    bad.write_text("[tolerance]\nmacs = 3\n")
    line = _one_line_error(capsys, [str(exported["single"]), "--gate-file", str(bad)], 1)
    assert "did you mean 'macs_pct'" in line


# --- regression gate ---------------------------------------------------------------------------


def _baseline_with(src: Path, dest: Path, **scale: float) -> Path:
    data = json.loads(src.read_text())
    for artifact in data["artifacts"]:
        for key, factor in scale.items():
            artifact[key] = round(artifact[key] / factor)
    dest.write_text(json.dumps(data))
    return dest


def test_baseline_regression_fails_above_tolerance_and_passes_below(
        exported: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = str(exported["ext"])
    base = tmp_path / "baseline.json"
    code, data, _ = _run(capsys, model, "--size-mb", "25", "--write-baseline", str(base))
    assert code == 0 and load_baseline(base)["mnist.onnx"].macs == 4_241_152
    code, data, _ = _run(capsys, model, "--size-mb", "25", "--baseline", str(base))
    checks = _by_budget(data)
    assert code == 0 and checks["regression.model_size_mb"]["status"] == "pass"
    assert checks["regression.latency_ms"]["reason"] == "skipped (no --target)"

    # the artifact is 10 % bigger than the baseline: fails at the default 5 %, within budget
    grown = _baseline_with(base, tmp_path / "grown.json", size_bytes=1.10)
    code, data, _ = _run(capsys, model, "--size-mb", "25", "--baseline", str(grown))
    check = _by_budget(data)["regression.model_size_mb"]
    assert code == 4 and check["status"] == "fail" and "grew +10.0%" in check["reason"]
    assert _by_budget(data)["max_model_size_mb"]["status"] == "pass"
    assert _run(capsys, model, "--size-mb", "25", "--baseline", str(grown),
                "--tolerance", "size=12%")[0] == 0
    assert _run(capsys, model, "--size-mb", "25", "--baseline", str(grown),
                "--tolerance", "15%")[0] == 0
    # 2 % bigger: below the tolerance
    slight = _baseline_with(base, tmp_path / "slight.json", size_bytes=1.02, macs=1.02)
    assert _run(capsys, model, "--size-mb", "25", "--baseline", str(slight))[0] == 0
    code, data, _ = _run(capsys, model, "--size-mb", "25", "--baseline", str(slight),
                         "--tolerance", "macs=1%")
    assert code == 4 and _by_budget(data)["regression.macs"]["status"] == "fail"
    # a failing gate does not record a baseline; an existing one needs --force
    code, _, err = _run(capsys, model, "--size-mb", "1", "--write-baseline",
                        str(tmp_path / "new.json"))
    assert code == 4 and not (tmp_path / "new.json").exists() and "not written" in err
    _one_line_error(capsys, [model, "--size-mb", "25", "--write-baseline", str(base)], 1)


def test_bad_baseline_files(exported: dict[str, Path], tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    model = str(exported["single"])
    line = _one_line_error(capsys, [model, "--size-mb", "25", "--baseline",
                                    str(tmp_path / "none.json")], 1)
    assert "--write-baseline" in line
    (tmp_path / "junk.json").write_text("{not json")
    _one_line_error(capsys, [model, "--size-mb", "25", "--baseline",
                             str(tmp_path / "junk.json")], 1)


# --- measured budgets --------------------------------------------------------------------------


def test_measured_latency_and_memory_on_local_target(
        exported: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    model = str(exported["single"])
    base = ["--target", "local", *FAST, "--memory-mb", "1e6"]
    code, data, _ = _run(capsys, model, *base, "--latency-ms", "1e6", "--percentile", "99")
    checks = _by_budget(data)
    assert code == 0 and checks["max_latency_ms"]["status"] == "pass"
    assert checks["max_peak_rss_mb"]["status"] == "pass" and checks["max_peak_rss_mb"]["value"]
    (m,) = data["artifacts"]
    assert m["latency_percentile"] == 99 and m["latency_ms"] == m["measurement"]["p99_ms"]
    assert data["target"] == "local (local)"
    code, data, _ = _run(capsys, model, *base, "--latency-ms", "1e-6")
    check = _by_budget(data)["max_latency_ms"]
    assert code == 4 and check["status"] == "fail" and "p90 latency" in check["reason"]
    code, data, _ = _run(capsys, model, "--target", "local", *FAST, "--memory-mb", "1e-6")
    assert code == 4 and _by_budget(data)["max_peak_rss_mb"]["status"] == "fail"


def test_another_architectures_profile_is_flagged(
        exported: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """rpi4's 100 ms budget judged on this machine: the result says it measured another device."""
    import platform

    from edgeprune.devices.profiles import arch_mismatch, load_profile

    model = str(exported["single"])
    code, data, _ = _run(capsys, model, "--target", "local", "--profile", "rpi4", *FAST)
    assert code in (0, 4)  # a budget may fail on this machine; the note is what is checked
    notes = [n for n in data["notes"] if "profile rpi4 is for aarch64" in n]
    if platform.machine() in ("aarch64", "arm64"):
        assert not notes
    else:
        assert len(notes) == 1 and platform.machine() in notes[0], data["notes"]
    rpi4 = load_profile("rpi4")
    assert arch_mismatch(rpi4, "arm64") is None and arch_mismatch(rpi4, "aarch64") is None
    assert "x86_64" in (arch_mismatch(rpi4, "x86_64") or "")
    assert arch_mismatch(load_profile("local"), "x86_64") is None  # arch "any"
    assert arch_mismatch(None, "x86_64") is None


def test_latency_ratio_needs_a_reference(exported: dict[str, Path]) -> None:
    from edgeprune.devices.measure import MeasureSettings
    from edgeprune.devices.targets import load_target

    # cv_threshold high: a noisy result is not cached, and the reference must hit the cache
    settings = MeasureSettings(runs=10, warmup=2, max_repeats=0, cv_threshold=1e6)
    local = load_target("local")
    budgets = GateBudgets(max_latency_ratio=1.0)
    alone = gate([exported["single"]], budgets, target=local, settings=settings)
    assert alone.checks[0].status == "skipped" and "--reference" in alone.checks[0].reason
    # the same artifact as its own reference: one cached measurement, ratio exactly 1
    with_ref = gate([exported["single"]], budgets, target=local, settings=settings,
                    reference=exported["single"])
    assert with_ref.checks[0].status == "pass" and with_ref.checks[0].value == 1.0
    tight = gate([exported["single"]], GateBudgets(max_latency_ratio=0.5), target=local,
                 settings=settings, reference=exported["single"])
    assert not tight.passed and "over the reference" in tight.checks[0].reason


def test_pruned_dir_is_exported_and_measured(exported: dict[str, Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, data, _ = _run(capsys, str(exported["pruned"]), "--target", "local", *FAST,
                         "--latency-ms", "1e6", "--macs", "5M")
    assert code == 0
    (m,) = data["artifacts"]
    assert m["kind"] == "pruned" and m["macs"] == 4_241_152 and m["latency_ms"] > 0


def test_measured_latency_regression_against_baseline(
        exported: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = str(exported["single"])
    base = tmp_path / "base.json"
    args = [model, "--target", "local", *FAST, "--latency-ms", "1e6"]
    assert _run(capsys, *args, "--write-baseline", str(base))[0] == 0
    data = json.loads(base.read_text())
    latency = data["artifacts"][0]["latency_ms"]
    # never assert on wall-clock time: scale the baseline far enough that noise cannot matter
    data["artifacts"][0]["latency_ms"] = latency / 1000  # now "1000x slower" than the baseline
    base.write_text(json.dumps(data))
    code, out, _ = _run(capsys, *args, "--baseline", str(base))
    check = _by_budget(out)["regression.latency_ms"]
    assert code == 4 and check["status"] == "fail" and "latency_ms grew" in check["reason"]
    data["artifacts"][0]["latency_ms"] = latency * 1000
    base.write_text(json.dumps(data))
    code, out, _ = _run(capsys, *args, "--baseline", str(base))
    assert code == 0 and _by_budget(out)["regression.latency_ms"]["status"] == "pass"


@pytest.mark.ssh
def test_measured_latency_over_ssh(sshd: SSHServer, known_hosts: Path,
                                   exported: dict[str, Path],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    url = f"ssh://{sshd.user}@127.0.0.1:{sshd.port}"
    ssh = ["--target", url, "--identity-file", str(sshd.client_key), "--known-hosts",
           str(known_hosts), "--python", "/usr/bin/python3", *FAST]
    model = str(exported["ext"])  # the .data file must travel with the model
    try:
        code, data, err = _run(capsys, model, *ssh, "--latency-ms", "1e6", "--memory-mb", "1e6")
        assert code == 0, err
        assert f"127.0.0.1:{sshd.port}" in data["target"]
        checks = _by_budget(data)
        assert checks["max_latency_ms"]["status"] == checks["max_peak_rss_mb"]["status"] == "pass"
        code, data, _ = _run(capsys, model, *ssh, "--latency-ms", "1e-6")
        assert code == 4 and _by_budget(data)["max_latency_ms"]["status"] == "fail"
    finally:
        shutil.rmtree(sshd.device_path("~/.cache/edgeprune-device"), ignore_errors=True)


# --- bad input ---------------------------------------------------------------------------------


def test_bad_inputs_are_one_line_errors(exported: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    good = str(exported["single"])
    line = _one_line_error(capsys, [str(tmp_path / "missing.onnx"), "--size-mb", "1"], 1)
    assert "does not exist" in line
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 50)
    line = _one_line_error(capsys, [str(corrupt), "--size-mb", "1"], 1)
    assert "corrupt.onnx" in line and "re-export" in line
    truncated = tmp_path / "trunc.onnx"
    truncated.write_bytes(Path(good).read_bytes()[:5000])
    _one_line_error(capsys, [str(truncated), "--size-mb", "1"], 1)
    bad_tflite = tmp_path / "m.tflite"
    bad_tflite.write_bytes(b"not a flatbuffer")
    assert "TFLite" in _one_line_error(capsys, [str(bad_tflite), "--size-mb", "1"], 1)
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"x")
    assert "pruned model directory" in _one_line_error(capsys, [str(weights), "--size-mb", "1"], 1)
    assert "not a pruned model" in _one_line_error(capsys, [str(tmp_path), "--size-mb", "1"], 1)
    # external data missing beside the model
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(exported["ext"], lonely / "mnist.onnx")
    line = _one_line_error(capsys, [str(lonely / "mnist.onnx"), "--size-mb", "1"], 1)
    assert "mnist.onnx.data" in line
    line = _one_line_error(capsys, ["--profile", "rpi", good], 1)
    assert "no profile named 'rpi'" in line and "did you mean" in line
    line = _one_line_error(capsys, [good, "--gate-file", str(tmp_path / "nope.toml")], 1)
    assert "nope.toml" in line
    line = _one_line_error(capsys, [good], 2)  # no profile, no gate file, no flags
    assert "no budgets" in line and "--profile" in line
    assert "sets none" in _one_line_error(capsys, ["--profile", "local", good], 2)
    assert "--target" in _one_line_error(capsys, [good, "--identity-file", "k", "--size-mb",
                                                  "1"], 2)
    assert "--target" in _one_line_error(capsys, [good, "--reference", good, "--size-mb", "1"],
                                         2)


@pytest.mark.parametrize("flags", [["--params", "lots"], ["--size-mb", "-1"],
                                   ["--tolerance", "speed=5%"], ["--percentile", "80"]])
def test_bad_flags_are_usage_errors(flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["gate", "model.onnx", *flags])
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


# --- TFLite ------------------------------------------------------------------------------------


def test_tflite_params_from_the_flatbuffer_and_measured_latency(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests._tflite import make_fc_model

    sample = make_fc_model(tmp_path / "fc.tflite")  # 64 -> 10 dense + softmax: 650 params
    model = str(sample.path)
    code, data, _ = _run(capsys, model, "--params", "600", "--macs", "1", "--size-mb", "1")
    checks = _by_budget(data)
    assert code == 4 and checks["max_params"]["status"] == "fail"
    assert checks["max_params"]["value"] == sample.param_count == 650
    assert checks["max_macs"]["status"] == "skipped" and "TFLite" in checks["max_macs"]["reason"]
    assert checks["max_model_size_mb"]["status"] == "pass"
    (m,) = data["artifacts"]
    assert m["kind"] == "tflite" and m["params"] == 650
    # measured on the local target through the TFLite runtime (ai-edge-litert)
    code, data, _ = _run(capsys, model, "--target", "local", *FAST, "--params", "650",
                         "--latency-ms", "1e6", "--memory-mb", "1e6")
    checks = _by_budget(data)
    assert code == 0 and checks["max_params"]["status"] == "pass"
    assert checks["max_latency_ms"]["status"] == "pass" and checks["max_latency_ms"]["value"] > 0
    (m,) = data["artifacts"]
    assert m["measurement"]["runtime"] == "ai-edge-litert"


def test_corrupt_tflite_is_a_one_line_artifact_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests._tflite import make_fc_model

    sample = make_fc_model(tmp_path / "fc.tflite")
    truncated = tmp_path / "trunc.tflite"
    truncated.write_bytes(sample.path.read_bytes()[:1000])
    line = _one_line_error(capsys, [str(truncated), "--params", "10"], 1)
    assert "trunc.tflite" in line and "not a readable TFLite model" in line
    assert "re-export" in line
