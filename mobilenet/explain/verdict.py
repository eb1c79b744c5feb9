"""One or two sentences per variant, built only from what was measured here.

An INT8 variant is compared with the FP32 variant of its own runtime, kind by kind (the
INT8 / FP32 time of each operator kind in the profiles), naming the kernels each side ran as
its profile recorded them and the instruction sets those names show (never the CPU's whole
flag list), with the quantization settings its build recorded. Where a runtime does not say
which kernels ran, the sentence says so. A variant of a runtime without INT8 is compared with
eager FP32; eager FP32 itself gets where its time goes. The net ratio comes from the bench's
results when they exist (many interleaved rounds), otherwise from the explain run's own
unprofiled timing.
"""
from __future__ import annotations

import json
from pathlib import Path

from mobilenet.explain import kernels, kinds
from mobilenet.explain.records import OK, OperatorProfile, Verdict

# A kind enters the sentence when it is at least this share of either side's operator time.
SHARE_TO_MENTION = 0.05
KINDS_TO_MENTION = 3
SAME_SPEED = 0.05  # ratios closer to 1 than this are "about the same speed"
# Meta option keys that describe an INT8 scheme, in the order a sentence names them.
SETTING_KEYS = ("engine", "qconfig", "activation_type", "weight_type", "activations", "weights", "scheme",
                "per_channel", "reduce_range", "calibrate_method", "activation_observer", "layers", "dtype")


def times(ratio: float) -> str:
    """INT8/FP32 (or variant/baseline) time ratio as readers say it: 0.5 -> '2.0× faster'."""
    if ratio <= 0:
        return "n/a"
    if abs(ratio - 1) < SAME_SPEED:
        return "at about the same speed"
    return f"{1 / ratio:.1f}× faster" if ratio < 1 else f"{ratio:.1f}× slower"


def baseline_of(variant, variants) -> str | None:
    """The FP32 variant of the same runtime for an INT8 one; eager FP32 for an FP32 variant of
    a runtime that has no INT8 form; None for the reference itself."""
    from mobilenet.registry import REFERENCE_ID
    same_runtime_fp32 = [v for v in variants if v.runtime == variant.runtime and v.precision == "fp32"]
    if variant.precision != "fp32" and same_runtime_fp32:
        return same_runtime_fp32[0].id
    if variant.id == REFERENCE_ID or any(v.runtime == variant.runtime and v.precision != "fp32"
                                         for v in variants):
        return None
    return REFERENCE_ID


def quantization_settings(meta: dict) -> str:
    options = meta.get("options") or {}
    parts = [f"{key}={options[key]}" for key in SETTING_KEYS if options.get(key) not in (None, "", {})]
    return ", ".join(parts)


def bench_p50(results_dir: Path, variant_id: str) -> tuple[float | None, float | None]:
    """(p50 ms, speed-up vs eager) of the bench's 1-thread result, if there is one."""
    from mobilenet.results import result_path
    path = result_path(results_dir, variant_id, 1)
    if not path.exists():
        return None, None
    data = json.loads(path.read_text())
    if data.get("status") not in ("ok", "DEGRADED", "INCONCLUSIVE"):
        return None, None
    return data.get("p50_ms"), data.get("speedup_vs_eager")


def net_ratio(subject: OperatorProfile, base: OperatorProfile, results_dir: Path) -> tuple[float | None, str]:
    """subject time / base time and where the numbers come from. From bench results it is the
    ratio of the two speed-ups against eager, each measured in the same rounds as eager."""
    s_p50, s_speed = bench_p50(results_dir, subject.variant)
    b_p50, b_speed = bench_p50(results_dir, base.variant)
    if s_speed and b_speed:
        return b_speed / s_speed, f"bench p50 {s_p50:.2f} vs {b_p50:.2f} ms"
    if subject.unprofiled_p50_ms and base.unprofiled_p50_ms:
        return (subject.unprofiled_p50_ms / base.unprofiled_p50_ms,
                f"explain run's unprofiled p50 {subject.unprofiled_p50_ms:.2f} vs {base.unprofiled_p50_ms:.2f} ms")
    return None, ""


def kind_ratios(subject: OperatorProfile, base: OperatorProfile) -> dict:
    """subject ms / base ms of each kind both spend time in."""
    return {k: subject.kind_ms[k] / base.kind_ms[k] for k in kinds.KINDS
            if subject.kind_ms.get(k) and base.kind_ms.get(k)}


def _mentioned(subject: OperatorProfile, base: OperatorProfile, ratios: dict) -> list[str]:
    s_total, b_total = subject.kind_sum_ms or 1.0, base.kind_sum_ms or 1.0
    weight = {k: max(subject.kind_ms[k] / s_total, base.kind_ms[k] / b_total) for k in ratios}
    chosen = [k for k in sorted(weight, key=weight.get, reverse=True)
              if weight[k] >= SHARE_TO_MENTION and k != kinds.OTHER]
    return chosen[:KINDS_TO_MENTION]


KERNELS_PER_KIND = 2  # kernel names a clause spells out per kind; the rest are counted


def kernel_phrase(profile: OperatorProfile, kind: str, word: str) -> str | None:
    """'INT8 on brgconv_avx2_1x1_I8 ×34 (AVX2)': the kernels one side ran for a kind, the
    instruction sets their names show, and whether they were inferred; None when unnamed."""
    names = (profile.kernels or {}).get(kind)
    if not names:
        return None
    ranked = sorted(names.items(), key=lambda item: -item[1])
    text = ", ".join(f"{name} ×{count}" for name, count in ranked[:KERNELS_PER_KIND])
    if len(ranked) > KERNELS_PER_KIND:
        text += f" and {len(ranked) - KERNELS_PER_KIND} more"
    facts = [", ".join(kernels.isa_shown(names))] if kernels.isa_shown(names) else []
    if kind in (profile.kernels_inferred or []):
        facts.append("inferred from the engine's source, not reported")
    return f"{word} on {text}" + (f" ({'; '.join(facts)})" if facts else "")


def _kind_clauses(kind_names: list[str], ratios: dict, precision_words: tuple[str, str],
                  subject: OperatorProfile, base: OperatorProfile) -> list:
    clauses = []
    subject_word, base_word = precision_words
    for position, kind in enumerate(kind_names):
        if position == 0:
            joiner = "as" if abs(ratios[kind] - 1) < SAME_SPEED else "than"
            clause = f"{kind}s run {times(ratios[kind])} in {subject_word} {joiner} {base_word}"
        else:
            clause = f"{kind}s {times(ratios[kind])}"
        ran = [phrase for phrase in (kernel_phrase(subject, kind, subject_word), kernel_phrase(base, kind, base_word))
               if phrase]
        clauses.append(clause + (f" ({'; '.join(ran)})" if ran else ""))
    return clauses


def isa_named(profiles: list, kind_names: list[str]) -> list[str]:
    """The instruction sets the kernels of these kinds show, over these profiles."""
    names = [name for profile in profiles for kind in kind_names for name in (profile.kernels or {}).get(kind, {})]
    return kernels.isa_shown(names)


def untold(profile: OperatorProfile, kind_names: list[str]) -> str:
    """What the profile's runtime does not say about the kernels of these kinds, or ""."""
    if not kind_names:
        return ""
    named = [kind for kind in kind_names if (profile.kernels or {}).get(kind)]
    shows_isa = [kind for kind in named if kernels.isa_shown(profile.kernels[kind])]
    inferred = [kind for kind in named if kind in (profile.kernels_inferred or [])]
    if kind_names and len(shows_isa) == len(kind_names) and not inferred:
        return ""
    if not named and profile.kernels and not profile.kernels_note:
        return ""  # its kernels are named, under kinds the sentence does not compare
    return profile.kernels_note or (f"{profile.variant}'s profile names no kernels" if not profile.kernels else "")


def engine_claim(profile: OperatorProfile) -> str:
    """'QNNPACK has only SSE2 micro-kernels on x86 (...)', when the engine's source table that
    named the profile's kernels and the library's own symbols agree on one instruction set."""
    library_isas = kernels.isa_shown(f"__{suffix}" for suffix in profile.library_kernel_isas or [])
    used = {name for kind in profile.kernels_inferred or [] for name in (profile.kernels or {}).get(kind, {})}
    if len(library_isas) != 1 or not used:
        return ""
    for rule in kernels.QNNPACK_RULES:
        if kernels.isa_shown(rule.kernels.values()) == library_isas and used <= set(rule.kernels.values()):
            return (f"{rule.name} has only {library_isas[0]} micro-kernels on {rule.architecture}: "
                    f"{rule.source_file} sets no other there, and every q8 conv/gemm/dwconv micro-kernel in "
                    f"{Path(profile.library).name or 'the library loaded'} is {library_isas[0]}")
    return ""


def kernels_sentence(profile: OperatorProfile, owner: str = "its") -> str:
    """Which kernels a profile's convolutions ran, where no kind comparison names them: by kind, or,
    when its convolutions could not be told apart by kind, all of the 'other' kind's kernels."""
    phrases = [f"{owner} {kind}s {phrase}" for kind in kinds.CONV_KINDS
               if (phrase := kernel_phrase(profile, kind, "ran"))]
    if not phrases and (phrase := kernel_phrase(profile, kinds.OTHER, "ran")):
        phrases = [f"{owner} operators not told apart by kind {phrase}"]
    if not phrases:
        return ""
    return f"{phrases[0][0].upper()}{phrases[0][1:]}" + "".join(f", {p}" for p in phrases[1:]) + "."


def _added_work(subject: OperatorProfile, base: OperatorProfile) -> str:
    """Kinds only the subject spends time on (quantize/dequantize, layout conversions)."""
    added = [(k, subject.kind_ms[k]) for k in (kinds.QDQ, kinds.LAYOUT)
             if subject.kind_ms.get(k, 0) > base.kind_ms.get(k, 0) + 0.05]
    return "; ".join(f"{k} adds {ms - base.kind_ms.get(k, 0):.2f} ms" for k, ms in added)


def where_time_goes(profile: OperatorProfile) -> str:
    total = profile.kind_sum_ms
    shares = sorted(((ms / total, k) for k, ms in profile.kind_ms.items()), reverse=True)[:3]
    text = ", ".join(f"{share * 100:.0f} % in {kind}s" if kind in kinds.CONV_KINDS else f"{share * 100:.0f} % {kind}"
                     for share, kind in shares)
    others = [op for op in profile.ops if op["kind"] == kinds.OTHER][:2]
    if others:
        text += "; the largest 'other' operators are " + ", ".join(
            f"{op['name']} ({op['ms_per_call']:.2f} ms, {op['count_per_call']}× per call)" for op in others)
    return f"{profile.variant}: of {total:.2f} ms of operator time per call, {text}."


def build(variant, profiles: dict, meta: dict, results_dir: Path, cpu_flags: list, variants) -> Verdict | None:
    """The verdict of one variant, or None when it has no profile at all."""
    subject = profiles.get(variant.id)
    if subject is None:
        return None
    base_id = baseline_of(variant, variants)
    settings = quantization_settings(meta) if variant.precision != "fp32" else ""
    verdict = Verdict(variant=variant.id, baseline=base_id or "", runtime=variant.runtime, text="",
                      cpu_flags=cpu_flags, quantization=settings, kernels=dict(subject.kernels or {}))
    if base_id is None:
        if subject.status == OK:
            note = untold(subject, list(kinds.CONV_KINDS))
            verdict.text = " ".join(filter(None, [where_time_goes(subject), kernels_sentence(subject),
                                                  f"{note[0].upper()}{note[1:]}." if note else ""]))
            verdict.isa_named = isa_named([subject], list(kinds.CONV_KINDS))
        return verdict if verdict.text else None
    base = profiles.get(base_id)
    if base is None:
        return None
    verdict.baseline_kernels = dict(base.kernels or {})
    verdict.net_ratio, verdict.net_source = net_ratio(subject, base, results_dir)
    net = (f"the net is {times(verdict.net_ratio)} ({verdict.net_source})"
           if verdict.net_ratio else "no net figure: neither side was timed")
    words = ("INT8", "FP32") if variant.precision != "fp32" else (variant.id, base_id)
    scheme = f" INT8 settings: {settings}." if settings else ""
    if subject.status == OK and base.status == OK:
        verdict.kind_ratio = kind_ratios(subject, base)
        mentioned = _mentioned(subject, base, verdict.kind_ratio)
        parts = _kind_clauses(mentioned, verdict.kind_ratio, words, subject, base) if mentioned else []
        added = _added_work(subject, base)
        verdict.isa_named = isa_named([subject, base], mentioned)
        claim = engine_claim(subject)  # it states the rule the inferred names come from
        judged = mentioned or [kind for kind in kinds.CONV_KINDS if kind in subject.kernels or kind in base.kernels]
        notes = [claim or untold(subject, judged), untold(base, judged)]  # one sentence each, said once
        told = " ".join(f"{note[0].upper()}{note[1:]}." for note in dict.fromkeys(filter(None, notes)))
        if not mentioned:  # no kind both sides were seen running: say which kernels each side ran
            ran = [kernels_sentence(subject, f"{words[0]}'s"), kernels_sentence(base, f"{words[1]}'s")]
            told = " ".join(filter(None, ran + [told]))
            verdict.isa_named = isa_named([subject, base], [*kinds.CONV_KINDS, kinds.OTHER])
            if not any(ran):
                told = " ".join(filter(None, [told, *(f"{note[0].upper()}{note[1:]}." for note in dict.fromkeys(
                    filter(None, [subject.kernels_note, base.kernels_note])))]))
        verdict.text = "; ".join(parts + ([added] if added else []) + [net]) + "." + (f" {told}" if told else "")
        verdict.text = verdict.text[0].upper() + verdict.text[1:] + scheme
    else:
        missing = subject if subject.status != OK else base
        note = f" {missing.kernels_note}." if missing.kernels_note else ""
        verdict.text = (f"{net[0].upper()}{net[1:]}; no per-kind breakdown, because {missing.variant} has no "
                        f"operator profile ({missing.reason.split(';')[0].split(' (')[0]}).{note}{scheme}")
    return verdict
