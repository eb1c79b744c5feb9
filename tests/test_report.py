"""The report's charts, cross-machine and thread-scaling tables, and `invoke compare`, on
result files written here (no benchmark runs)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from PIL import Image

from mobilenet.bench import compare
from mobilenet.registry import REFERENCE_ID, VARIANTS, by_id
from mobilenet.report import markdown as report
from mobilenet.report import plots
from mobilenet.results import Environment, Result, write_result

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_result(variant: str, p50: float, *, machine: str = "box-a (Test CPU)", threads: int = 1,
                eager_p50: float | None = None, status: str = "ok", ci: float = 0.03,
                size_mb: float | None = None, top1: float = 75.0, threads_effective: int | None = -1) -> Result:
    """A Result shaped like the bench's, with speed-up taken against `eager_p50` of the same machine
    and 95 % intervals of ±`ci` (relative) around p50 and speed-up.

    As in the bench, a FAILED variant is fully measured (the report withholds its latency)
    and a skipped one carries no measurement at all.
    """
    v = by_id(variant)
    env = Environment(
        machine_id=machine, hostname=machine.split()[0], cpu_model="Test CPU", logical_cores=4,
        os="Linux 6.1 (x86_64)", python="3.11.7", torch="2.14.1", torchvision="0.29.1",
        threads_requested=threads, threads_effective=threads if threads_effective == -1 else threads_effective,
        quantized_engine=v.engine,
        runtime_versions={"torch": "2.14.1"}, weights_source="/w/mobilenet_v2.pth", weights_sha256="ab" * 32,
        weights_random=False, image_set="manifest:manifest.csv (8 calib, 20 eval)", eval_photos=20,
        labelled=True, energy_source="no RAPL", data_sha256="cd" * 32)
    common = dict(variant=variant, runtime=v.runtime, precision=v.precision, summary=v.summary,
                  threads=threads, env=env, build={"status": "ok"}, deprecated=v.deprecated)
    if status == "skipped":
        return Result(status=status, status_reason="runtime not installed", **common)
    reason = {"FAILED": "agreement 50.0% (needs >= 80%)", "DEGRADED": "agreement 85.0% (below 90%)"}.get(
        status, "reference" if variant == REFERENCE_ID else "agreement 100.0%")
    speedup = (eager_p50 or p50) / p50
    return Result(
        status=status, status_reason=reason, **common,
        size_mb=size_mb or (14.2 if v.precision == "fp32" else 3.9), load_ms=50.0, first_inference_ms=p50 * 2,
        preprocess_ms=5.0, sessions=5, runs=200, rounds=20, mean_ms=p50 * 1.05, p50_ms=p50,
        p50_ci_ms=[p50 * (1 - ci), p50 * (1 + ci)], session_p50_ms=[p50] * 5, p90_ms=p50 * 1.2,
        p99_ms=p50 * 1.5, std_ms=p50 * 0.1, cv=0.1, round_cv=0.05,
        speedup_vs_eager=speedup, speedup_ci=[speedup * (1 - ci), speedup * (1 + ci)], session_speedups=[speedup] * 5,
        peak_rss_mb=300.0, cpu_time_s=4.0, cpu_util_pct=98.0,
        energy_mj_per_inference=None, top1_pct=top1, top5_pct=90.0, agreement_pct=100.0, max_abs_dlogit=0.01)


def write_machine(folder: Path, machine: str, p50s: dict[str, float], threads: int = 1, **extra) -> None:
    eager = p50s[REFERENCE_ID]
    for variant, p50 in p50s.items():
        write_result(folder, make_result(variant, p50, machine=machine, threads=threads, eager_p50=eager,
                                         **extra))


def table_row(text: str, heading: str, variant: str) -> list[str]:
    """Cells of `variant`'s row in the first table after `heading`."""
    section = text[text.index(heading):]
    line = next(line for line in section.splitlines() if line.startswith(f"| `{variant}`"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def tables(text: str) -> list[tuple[int, list[str], dict[str, list[str]]]]:
    """Every markdown table in `text`: (offset of its header line, header cells, {variant: cells})."""
    found, offset, current = [], 0, None
    for line in text.splitlines(keepends=True):
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if current is None:
                current = (offset, cells, {})
                found.append(current)
            elif not set(line.strip()) <= set("|-"):
                current[2][cells[0].strip("`")] = cells
        else:
            current = None
        offset += len(line)
    return found


def image_links(markdown: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)


@pytest.fixture(scope="module")
def sweep_report(tmp_path_factory) -> Path:
    """report.md of one machine at 1 and 2 threads, with a FAILED and a skipped variant."""
    build = tmp_path_factory.mktemp("sweep") / "build"
    results = build / "results"
    write_machine(results, "box-a (Test CPU)", {"fp32-eager": 20.0, "onnx-fp32": 8.0, "onnx-int8": 6.0,
                                                "int8-static-fbgemm": 9.0}, threads=1)
    write_machine(results, "box-a (Test CPU)", {"fp32-eager": 12.0, "onnx-fp32": 5.0, "onnx-int8": 4.0},
                  threads=2)
    for threads in (1, 2):
        write_result(results, make_result("litert-int8", 3.0, threads=threads, status="FAILED"))
        write_result(results, make_result("executorch-fp32", 0, threads=threads, status="skipped"))
    write_result(results, make_result("int8-static-fbgemm", 7.0, threads=2, status="FAILED"))
    return report.write(report.result_folders(build), build / "report.md")[0]


def test_plots_are_pngs_linked_relative_to_the_report(sweep_report):
    text = sweep_report.read_text()
    links = image_links(text)
    assert sorted(Path(link).name for link in links) == [
        "latency-1t.png", "latency-2t.png", "scaling.png", "tradeoff-1t.png", "tradeoff-2t.png"]
    for link in links:
        assert not Path(link).is_absolute() and link.startswith("plots/"), link
        png = sweep_report.parent / link
        assert png.read_bytes()[:8] == PNG_SIGNATURE, link
        with Image.open(png) as image:
            width, height = image.size
            assert image.format == "PNG" and 600 <= width <= 2000 and 300 <= height <= 2000, (link, image.size)
    # Nothing else is left in plots/, in particular no temp file of an atomic write.
    written = {p.relative_to(sweep_report.parent).as_posix() for p in (sweep_report.parent / "plots").rglob("*")
               if p.is_file()}
    assert written == set(links)
    assert "n/a (no RAPL)" in text


def test_write_all_returns_the_chart_paths(tmp_path):
    machine = "box-a (Test CPU)"
    results = [make_result("fp32-eager", 20.0), make_result("onnx-int8", 5.0, eager_p50=20.0),
               make_result("onnx-fp32", 0, status="skipped")]
    figures = plots.write_all(results, tmp_path / "plots")
    assert figures == {(machine, "latency", 1): tmp_path / "plots" / "box-a-test-cpu" / "latency-1t.png",
                       (machine, "tradeoff", 1): tmp_path / "plots" / "box-a-test-cpu" / "tradeoff-1t.png"}
    assert all(path.read_bytes()[:8] == PNG_SIGNATURE for path in figures.values())


def test_thread_sweep_renders_the_scaling_table(sweep_report):
    text = sweep_report.read_text()
    heading = "### Thread scaling"
    assert "p50 ms @ 1t" in text and "p50 ms @ 2t" in text and "scaling × 2t vs 1t" in text
    assert table_row(text, heading, "fp32-eager")[1:] == ["20.00", "12.00", "1.67×"]
    assert table_row(text, heading, "onnx-fp32")[1:] == ["8.00", "5.00", "1.60×"]
    assert table_row(text, heading, "onnx-int8")[1:] == ["6.00", "4.00", "1.50×"]
    # Measured at 1 thread, FAILED at 2: no latency and no scaling figure.
    assert table_row(text, heading, "int8-static-fbgemm")[1:] == ["9.00", "—", "—"]
    assert table_row(text, heading, "litert-int8")[1:] == ["—", "—", "—"]
    # The main tables per thread count are still there.
    assert "### 1 thread\n" in text and "### 2 threads\n" in text


MAIN_COLUMNS = ["variant", "size MB", "p50 ms (95% within-run)", "speed-up (95% within-run)", "top-1 %", "agree %",
                "status"]
# The columns of the report's tables before the main table was narrowed: none may be lost.
EARLIER_COLUMNS = ["runtime", "size MB", "vs FP32", "p50 ms (95% rerun)", "p90 ms", "speed-up (95% rerun)", "load ms",
                   "peak RSS MB", "CPU", "energy mJ/inf", "top-1 %", "top-5 % (n/N; 95%)", "agree %", "status",
                   "mean ms",
                   "p99 ms", "std ms", "CV %", "round CV %", "p50 per session ms", "first inference ms", "timed runs",
                   "CPU s", "threads", "max abs Δlogit", "tied top-1 rows"]


def test_report_opens_with_the_answer_then_a_narrow_main_table_then_the_details(sweep_report):
    text = sweep_report.read_text()
    summary, one, two = (text.index(s) for s in ("## Summary\n", "**box-a (Test CPU)**, 1 thread:",
                                                  "**box-a (Test CPU)**, 2 threads:"))
    machine = text.index("## box-a (Test CPU)\n")
    assert summary < one < two < machine < tables(text)[0][0], "the summary comes before every table"
    assert text[one:two].splitlines()[2:6] == [
        "- Fastest: `onnx-int8`, p50 6.00 (5.82–6.18) ms, 3.33× (3.23×–3.43×) eager FP32; its within-run interval "
        "clears the runner-up `onnx-fp32` (8.00 (7.76–8.24) ms).",
        "- Smallest file: `onnx-int8`, `int8-static-fbgemm`, 3.90 MB (tied).",
        "- Best accuracy per MB: tied (no accuracy intervals recorded, so no claim): `onnx-int8` 19.2 %/MB, "
        "`int8-static-fbgemm` 19.2 %/MB, `onnx-fp32` 5.3 %/MB, `fp32-eager` 5.3 %/MB.",
        "- `litert-int8` is FAILED: agreement 50.0% (needs \\>= 80%)."]
    assert "- `int8-static-fbgemm` is FAILED" in text[two:machine] and "p50 4.00 (3.88–4.12) ms" in text[two:machine]
    assert "- Fastest" not in text[machine:], "the summary is not repeated in the machine's section"

    section = text[text.index("### 1 thread\n"):text.index("### 2 threads\n")]
    (main_at, main_headers, main_rows), *details = tables(section)
    assert main_headers == MAIN_COLUMNS
    assert list(main_rows) == ["fp32-eager", "int8-static-fbgemm", "onnx-fp32", "onnx-int8", "litert-int8",
                               "executorch-fp32"]
    assert main_rows["fp32-eager"] == ["`fp32-eager`", "14.20", "20.00 (19.40–20.60)", "1.00× (0.97×–1.03×)",
                                       "75.0", "100.0", "ok"]
    # A FAILED variant's latency stays withheld; the reasons, which are long, are in the details.
    assert main_rows["litert-int8"] == ["`litert-int8`", "3.90", "—", "—", "75.0", "100.0", "**FAILED**"]
    assert main_rows["executorch-fp32"] == ["`executorch-fp32`", "—", "—", "—", "—", "—", "skipped"]

    # The details: below the main table, folded, every variant's row, every other column.
    assert len(details) == 3
    assert main_at < section.index("<details>") < details[0][0] < details[1][0] < section.index("</details>")
    detail_columns = [h for _, headers, _ in details for h in headers[1:]]
    assert len(detail_columns) == len(set(detail_columns)) and not set(detail_columns) & set(MAIN_COLUMNS)
    assert set(EARLIER_COLUMNS) <= set(MAIN_COLUMNS) | set(detail_columns)
    assert all(list(rows) == list(main_rows) for _, _, rows in details)

    def detail(variant):
        return {h: cell for _, headers, rows in details for h, cell in zip(headers[1:], rows[variant][1:])}
    assert detail("fp32-eager") == {
        "p50 ms (95% rerun)": "not yet known", "speed-up (95% rerun)": "not yet known",
        "p90 ms": "24.00", "p99 ms": "30.00", "mean ms": "21.00", "std ms": "2.00", "CV %": "10.0",
        "round CV %": "5.0", "p50 per session ms": "20.00 / 20.00 / 20.00 / 20.00 / 20.00", "timed runs": "200",
        "first inference ms": "40.0", "load ms": "50", "runtime": "torch\\_eager", "vs FP32": "1.00×",
        "peak RSS MB": "300", "CPU": "98%", "CPU s": "4.00", "threads": "1 → 1", "energy mJ/inf": "n/a (no RAPL)",
        "max abs Δlogit": "0.01", "tied top-1 rows": "—", "status and reason": "ok",
        # No counts recorded in these rows: the percentages alone.
        "top-1 % (n/N; 95%)": "75.0", "top-5 % (n/N; 95%)": "90.0", "agree % (n/N; 95%)": "100.0",
        "top-1 vs FP32 pts (95%)": "—", "FP32 only right": "—", "only this right": "—", "McNemar p": "—",
        "same top-1 as at 1 thread %": "—"}
    failed = detail("litert-int8")
    assert failed["status and reason"] == "**FAILED**: agreement 50.0% (needs \\>= 80%)"
    assert failed["p90 ms"] == failed["p50 per session ms"] == failed["first inference ms"] == "—"
    assert failed["load ms"] == "50" and failed["peak RSS MB"] == "300" and failed["vs FP32"] == "0.27×"
    assert detail("executorch-fp32")["status and reason"] == "skipped: runtime not installed"
    # The environment block follows the numbers it describes, before the notes.
    assert text.index("### Thread scaling") < text.index("### Environment") < text.index("## Notes")


def test_main_table_of_every_variant_fits_a_laptop_screen():
    def main_lines(statuses: dict) -> list[str]:
        rows = [make_result(v.id, 35.75 if v.id == REFERENCE_ID else 9.5 + 2.5 * i, eager_p50=35.75, ci=0.1,
                            status=statuses.get(v.id, "ok")) for i, v in enumerate(VARIANTS)]
        for r in rows:
            if r.status == "FAILED":
                r.status_reason = "build error: the converter stopped with a message long enough to widen any table"
        text = report.render(rows)
        section = text[text.index("### 1 thread\n"):]
        main_at, headers, main_rows = tables(section)[0]
        assert headers == MAIN_COLUMNS and list(main_rows) == [v.id for v in VARIANTS]
        assert "the converter stopped" not in section[:section.index("<details>")]
        assert ("the converter stopped" in section[section.index("<details>"):]) == ("FAILED" in statuses.values())
        return section[main_at:].splitlines()[:2 + len(VARIANTS)]

    every_variant_ok = main_lines({})
    # 120: the two interval headers name their interval "(95% within-run)".
    assert max(map(len, every_variant_ok)) <= 120, "\n".join(every_variant_ok)
    # Reasons stay out of the main table: a flagged row widens it by its status word alone.
    flagged = main_lines({"int8-dynamic": "DEGRADED", "litert-int8": "FAILED", "aoti-int8": "skipped"})
    widened = len("**FAILED**") - len("status")
    assert [len(line) for line in flagged] == [len(line) + widened for line in every_variant_ok]
    assert [line.split("|")[-2].strip() for line in flagged[2:]].count("ok") == len(VARIANTS) - 3


def test_two_machines_get_a_cross_machine_table(tmp_path):
    build = tmp_path / "build"
    write_machine(build / "results", "box-a (Test CPU)", {"fp32-eager": 20.0, "onnx-fp32": 8.0, "onnx-int8": 5.0})
    # Picked up without being named: results copied back from a remote host.
    write_machine(build / "remote" / "pi5" / "results", "pi5 (Cortex-A76)",
                  {"fp32-eager": 90.0, "onnx-fp32": 60.0, "onnx-int8": 30.0})
    text = report.write(report.result_folders(build), build / "report.md")[0].read_text()

    heading = "## Across machines"
    header = next(line for line in text[text.index(heading):].splitlines() if line.startswith("| variant"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["variant", "box-a (Test CPU)", "pi5 (Cortex-A76)"]
    assert table_row(text, heading, "fp32-eager")[1:] == ["20.00 ms (1.00× (0.97×–1.03×))",
                                                          "90.00 ms (1.00× (0.97×–1.03×))"]
    assert table_row(text, heading, "onnx-fp32")[1:] == ["8.00 ms (2.50× (2.42×–2.58×))",
                                                         "60.00 ms (1.50× (1.46×–1.54×))"]
    # Each machine keeps its own environment block, main table and charts.
    assert text.index(heading) < text.index("## box-a (Test CPU)") < text.index("## pi5 (Cortex-A76)")
    assert "| machine                         | pi5 (Cortex-A76)" in text
    assert table_row(text, "## pi5 (Cortex-A76)", "onnx-fp32")[2] == "60.00 (58.20–61.80)"
    # The answer for each machine opens the report, before any table.
    summary = text[text.index("## Summary"):text.index(heading)]
    assert summary.index("**box-a (Test CPU)**, 1 thread:") < summary.index("**pi5 (Cortex-A76)**, 1 thread:")
    assert "- Fastest: `onnx-int8`, p50 30.00 (29.10–30.90) ms" in summary
    assert "| " not in summary
    links = image_links(text)
    assert {link.split("/")[1] for link in links} == {"box-a-test-cpu", "pi5-cortex-a76"}
    assert all((build / link).is_file() for link in links)


def test_folders_merge_once_and_first_result_wins(tmp_path):
    build = tmp_path / "build"
    write_machine(build / "results", "box-a (Test CPU)", {"fp32-eager": 20.0, "onnx-fp32": 8.0})
    write_machine(tmp_path / "old", "box-a (Test CPU)", {"fp32-eager": 30.0, "onnx-fp32": 9.0})
    folders = report.result_folders(build, [str(build / "results"), str(tmp_path / "old")])
    assert folders == [build / "results", tmp_path / "old"]
    text = report.write(folders, build / "report.md")[0].read_text()
    assert table_row(text, "### 1 thread", "onnx-fp32")[2] == "8.00 (7.76–8.24)"
    assert "Ignored 2 result(s)" in text and "Across machines" not in text
    with pytest.raises(ValueError, match="no such results folder"):
        report.result_folders(build, [str(tmp_path / "missing")])


def test_compare_judges_speedups_by_intervals_and_flags_lost_variants():
    # The new run's machine is 2 % slower (eager FP32 too); speed-ups are judged, not p50s.
    old = [make_result(v, p50, eager_p50=20.0, ci=ci) for v, p50, ci in (
        ("fp32-eager", 20.0, 0.03), ("onnx-fp32", 10.0, 0.02), ("onnx-int8", 6.0, 0.3), ("int8-dynamic", 22.0, 0.03),
        ("litert-int8", 5.0, 0.03), ("executorch-int8", 5.0, 0.03))]
    new = [make_result("fp32-eager", 20.4, eager_p50=20.4),
           make_result("onnx-fp32", 12.24, eager_p50=20.4, ci=0.02),  # 20 % slower against eager, ±2 %: apart
           make_result("onnx-int8", 7.65, eager_p50=20.4, ci=0.3),  # 25 % slower, but ±30 % each
           make_result("int8-dynamic", 15.3, eager_p50=20.4),  # 30 % faster
           make_result("litert-int8", 5.0, eager_p50=20.4, status="FAILED"),  # ok -> FAILED
           make_result("executorch-int8", 0, status="skipped")]  # ok -> skipped
    result = compare.compare(old, new, threshold_pct=10)
    by_variant = {c.variant: c for c in result.changes}
    assert by_variant["onnx-fp32"].change_pct == pytest.approx(20.0)
    assert by_variant["onnx-fp32"].p50_change_pct == pytest.approx(22.4)
    assert by_variant["onnx-fp32"].verdict == "REGRESSED"
    assert by_variant["onnx-int8"].verdict == "unchanged (speed-up inside the combined 95 % interval)"
    assert by_variant["int8-dynamic"].verdict == "improved"
    # The reference's speed-up is 1 by definition, and without a history its p50 is not judged.
    assert by_variant["fp32-eager"].verdict.startswith("not judged (its speed-up is 1 by definition")
    assert [(x.variant, x.new_status) for x in result.lost] == [("litert-int8", "FAILED"),
                                                                  ("executorch-int8", "skipped")]
    assert [c.variant for c in result.regressions] == ["onnx-fp32", "litert-int8", "executorch-int8"]
    assert [c.variant for c in result.improvements] == ["int8-dynamic"]
    text = compare.render(result)
    assert "| `onnx-fp32`" in text and "+20.0 %" in text and "REGRESSED: FAILED now" in text


def test_compare_change_below_threshold_is_not_a_regression():
    # 8 % slower against eager with intervals apart (±1 %) is real but below the 10 % threshold.
    result = compare.compare([make_result("onnx-fp32", 10.0, eager_p50=20.0, ci=0.01)],
                             [make_result("onnx-fp32", 10.8, eager_p50=20.0, ci=0.01)])
    assert result.changes[0].verdict == "unchanged (beyond noise, below threshold)"
    assert not result.regressions


def run_compare(old: Path, new: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", "compare", str(old), str(new), *options],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_invoke_compare_exit_code(tmp_path):
    write_machine(tmp_path / "old", "box-a (Test CPU)", {"fp32-eager": 20.0, "onnx-fp32": 10.0})
    write_machine(tmp_path / "new", "box-a (Test CPU)", {"fp32-eager": 20.0, "onnx-fp32": 11.5})  # +15 %

    slower = run_compare(tmp_path / "old", tmp_path / "new")
    assert slower.returncode == 1, slower.stdout + slower.stderr
    assert "REGRESSED" in slower.stdout
    assert "onnx-fp32@1t +15.0 %" in slower.stderr

    lenient = run_compare(tmp_path / "old", tmp_path / "new", "--threshold", "20")
    assert lenient.returncode == 0, lenient.stdout + lenient.stderr
    faster = run_compare(tmp_path / "new", tmp_path / "old")
    assert faster.returncode == 0 and "improved" in faster.stdout


def test_compare_refuses_a_folder_of_several_machines(tmp_path):
    write_machine(tmp_path / "mixed", "box-a (Test CPU)", {"fp32-eager": 20.0})
    write_machine(tmp_path / "mixed", "box-b (Test CPU)", {"fp32-eager": 20.0}, threads=2)
    write_machine(tmp_path / "one", "box-a (Test CPU)", {"fp32-eager": 20.0})
    with pytest.raises(ValueError, match="2 machines"):
        compare.compare_folders(tmp_path / "mixed", tmp_path / "one")


def _device_row(variant: str, p50: float, emulated: bool, **fields) -> Result:
    """A device-mode row: no eager FP32 on the device, so no speed-up, and cross-ISA figures."""
    row = make_result(variant, p50, machine="pi (Cortex-A72)")
    row.env.device_of, row.env.device_install_mb, row.env.emulated = "box-a (Test CPU)", 88.0, emulated
    row.speedup_vs_eager = row.speedup_ci = None
    row.speedup_note = "no eager FP32 on the device (torch not installed there)"
    row.session_speedups = []
    for name, value in fields.items():
        setattr(row, name, value)
    return row


def test_device_rows_validate_without_speedup_only_when_it_says_why(tmp_path):
    from mobilenet.results import ResultsError, load_results
    row = _device_row("onnx-int8", 9.0, emulated=False, cross_isa_agreement_pct=95.0, cross_isa_max_abs_dlogit=0.4)
    write_result(tmp_path, row)
    assert load_results(tmp_path)[0].cross_isa_agreement_pct == 95.0
    row.speedup_note = None
    write_result(tmp_path, row)
    with pytest.raises(ResultsError, match="speedup_vs_eager"):
        load_results(tmp_path)


def test_device_section_shows_cross_isa_and_makes_no_speed_claim_when_emulated(tmp_path):
    rows = [_device_row("onnx-fp32", 900.0, True, cross_isa_agreement_pct=100.0, cross_isa_max_abs_dlogit=2e-5),
            _device_row("onnx-int8", 300.0, True, cross_isa_agreement_pct=95.0, cross_isa_max_abs_dlogit=0.41)]
    text = report.render(rows)
    assert "Same answers on this device as on box-a (Test CPU)?" in text and "88 MB" in text
    assert re.search(r"\| `onnx-int8` +\| 95\.0 +\| 0\.41 +\|", text)
    assert "no claim; the timings are emulated" in text and "Fastest: `" not in text
    # The same rows from a real board: the interval decides, and the claim names no speed-up.
    for row in rows:
        row.env.emulated = False
    text = report.render(rows)
    assert "Fastest: `onnx-int8`, p50 300.00" in text and "eager FP32; its" not in text
    assert "no preprocessing is timed" not in text  # preprocess_ms was recorded for these rows


def test_latency_chart_draws_a_p90_a_hair_below_the_sessions_p50(tmp_path):
    """p50 is the sessions' geometric mean and p90 pools every call, so p90 < p50 happens; the
    chart must still be drawn (matplotlib refuses a negative error bar)."""
    row = make_result("onnx-int8", 5.0, eager_p50=20.0)
    row.p90_ms = row.p50_ms * 0.99
    path = plots.latency_chart([make_result("fp32-eager", 20.0), row], tmp_path / "latency.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
