#!/usr/bin/python3
"""The figures of a model card, written from the files they come from.

A model card (models/bundled/MODEL_CARD.md) keeps its prose by hand; its tables of
numbers sit between markers that name what writes them:

    <!-- model_card: report models/bundled -->
    ...the table this script writes...
    <!-- /model_card -->

    tools/model_card.py update models/bundled/MODEL_CARD.md   # rewrite every block
    tools/model_card.py check models/bundled/MODEL_CARD.md    # exit 1 when a block is stale
    tools/model_card.py show report models/bundled            # print one block

Blocks (paths relative to the repository root):
  setup DIR       the model's parts: weights, training, calibration, views, decision
                  rule, referral, not-a-lesion check, golden set (DIR/manifest.json)
  report DIR      DIR/metrics.json: what the figures were measured on, the headline
                  metrics (with the decision rule, without its floor, most probable
                  class) and the per-class table
  referral DIR    DIR/metrics.json's referral at the served operating point, with 95%
                  Wilson intervals, and the risk rule alone
  cv DIR          a `skinlesion cv` folder's cv.json: each round and the mean +- sd
  subgroups DIR [GROUPING ...]
                  the cv folder's pooled subgroups (source, sex, age_band,
                  localization): balanced accuracy mean [min, max] of the rounds,
                  melanoma recall and malignant lesions referred with 95% intervals
  loro LABEL=FILE ...
                  leave_one_round_out_*.json of `fit-thresholds --from_cv`: each
                  file's rounds, mean +- sd and lowest round
  kept_out DIR LORO_FILE
                  the shipped model's procedure with one fold kept out (`train
                  --all_folds --fold N`, docs/cv/36ep_160_balmix_allbut): DIR's
                  fold<N>_metrics.json, each paired with round N of LORO_FILE, the
                  means and the paired difference

ctest model_card_check runs `check` on the bundled model's card, so a model replaced
without its card (or a card edited by hand inside a block) fails the tests.
"""
import argparse
import difflib
import json
import pathlib
import re
import shlex
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- model_card: (?P<args>[^>]*?) -->\n)(?P<body>.*?)(<!-- /model_card -->)", re.S)


def load(path):
    with open(ROOT / path) as f:
        return json.load(f)


def f3(x):
    return "–" if x is None else f"{x:.3f}"


def pct(x):
    return f"{100 * x:.1f}%"


def get(d, path, default=None):
    for key in path.split("/"):
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return d


def table(header, rows, align=None):
    align = align or ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


KEPT_OUT_MODELS = "models trained as this one on every image but the fold they answered"


def fitted_on(fitted):
    """"the 5,984 out-of-fold answers of 5 cv rounds" / "the 900 val images"."""
    if not fitted:
        return "not recorded"
    n = f"{fitted.get('images', 0):,}"
    if fitted.get("partition") == "out_of_fold":
        rounds = fitted.get("rounds", "?")
        if kept_out(fitted):
            return f"the {n} answers of {rounds} {KEPT_OUT_MODELS}"
        if fitted.get("kept_out_models"):
            return f"the {n} out-of-fold answers of {rounds} rounds ({fitted['kept_out_models']} of them of {KEPT_OUT_MODELS})"
        return f"the {n} out-of-fold answers of {rounds} cv rounds"
    return f"the {n} {fitted.get('partition', '?')} images"


def refer_policy(p, fitted=""):
    """The referral rule of a manifest's "refer" object or a report's referral policy."""
    confidence = p.get("sensitivity_confidence")
    margin = p.get("sensitivity_margin") or 0
    return (f"malignancy risk >= **{p['malignancy_risk_threshold']:.3f}** (target malignant sensitivity "
            f"{p['target_sensitivity']:.2f}"
            + (f", fitted for {p['target_sensitivity'] + margin:.2f} (margin {margin:.2f})" if margin else "")
            + (f" at {100 * confidence:.0f}% confidence" if confidence else "")
            + f"{fitted}), or top probability < {p['min_confidence']:.2f}, or margin < {p['min_margin']:.2f}")


def block_setup(model_dir):
    m = load(f"{model_dir}/manifest.json")
    weights = ROOT / model_dir / "model.safetensors"
    size_mb = weights.stat().st_size / 1e6 if weights.exists() else float("nan")
    data, training = m.get("data", {}), m.get("training", {})
    rows = [
        ("Architecture", f"`{m['architecture']}`, {m['num_classes']} classes ({', '.join(m['labels'])}), "
                         f"{m['image_size']} x {m['image_size']} input ("
                         + {"resize": "the whole image squashed to it"}.get(
                             get(m, "preprocessing/resize"), "the centred square of the shorter side")
                         + ")"),
        ("Weights", f"`model.safetensors`, {m.get('weights_dtype', 'float32')}, {size_mb:.1f} MB, "
                    f"sha256 `{m.get('sha256', '')[:12]}`"),
    ]
    best = training.get("best_epoch")
    images = " / ".join(f"{data.get(k, 0):,} {k.split('_')[0]}" for k in ("train_images", "val_images", "test_images"))
    fold = {None: "", "all": ", every fold"}.get(data.get("fold"), f", fold {data.get('fold')}")
    rows.append(("Training data", f"{data.get('dataset', '?')}, split `{data.get('split_method', '?')}` "
                                  f"(digest `{data.get('split_digest', '')[:12]}`{fold}): {images} images"))
    epoch = (f"epoch {best} of {training.get('epochs_run')}" if data.get("val_images")
             else f"the last epoch of {training.get('epochs_run')} (no validation images to choose with)")
    draws = (training.get("config") or {}).get("samples_per_epoch") or 0
    if draws:
        epoch += f", epochs of {draws:,} images drawn (class-balanced)"

    rows.append(("Training run", f"{epoch}; {training.get('numerics', '?')} on {get(training, 'cpu/model', '?')} "
                                 f"({training.get('numerics_reason', '')})"))
    cal = m.get("calibration", {})
    rows.append(("Calibration", f"temperature {cal.get('temperature', 1):.3f} ({cal.get('method', 'fitted on ' + str(cal.get('fitted_on')))})"))
    views = {"none": 1, "flips": 3, "dihedral": 8}.get(m.get("tta", "none"), "?")
    rows.append(("Test-time views", f"`{m.get('tta', 'none')}` ({views} forward passes per image)"))
    d = m.get("decision")
    if d:
        floor = d.get("recall_floor") or {}
        text = (f"largest log P(class) - {d['tau']:.2f} log prior(class)"
                + (f" + {floor['bias']:.2f} [class is {floor['class']}]" if floor else "")
                + f", fitted on {fitted_on(d.get('fitted_data'))}")
        if floor:
            text += (f"; {floor['class']} recall floor {floor['target_recall']:.2f} "
                     f"({'reached' if floor.get('reached') else 'not reached'})")
        rows.append(("Decision rule", text))
    r = m.get("refer")
    if r:
        text = refer_policy(r, f", fitted on {fitted_on(r.get('fitted_data'))}")
        v = r.get("validation")
        if v:
            text += (f"; where fitted: {pct(v['malignant_sensitivity'])} of malignant lesions and "
                     f"{pct(v['melanoma_sensitivity'])} of melanomas referred, refer rate {pct(v['refer_rate'])}")
        rows.append(("Refer rule", text))
    o = m.get("ood")
    if o:
        text = (f"{o['method']} score > {o['threshold']:.1f} (rejects {pct(o['reject_rate'])} of "
                f"{fitted_on(o.get('fitted_data'))})")
        check = o.get("check")
        if check:
            text += (f"; {round(check['caught'] * check['n'])} of {check['n']} non-lesion images caught, "
                     f"AUROC {check['auroc_vs_lesions']:.3f} (`{check['images']}`)")
        rows.append(("Not-a-lesion check", text))
    else:
        rows.append(("Not-a-lesion check", "none fitted"))
    g = m.get("golden_set")
    if g:
        rows.append(("Golden set", f"{len(g.get('items', []))} images, tolerance {g['tolerance']:g} "
                                   f"(bf16 {g['tolerance_bf16']:g})"))
    return table(["", ""], rows, ["---", "---"])


def kept_out(fitted):
    """Whether a fit's out-of-fold answers all came from models trained as the served one."""
    fitted = fitted or {}
    return bool(fitted.get("kept_out_models")) and fitted["kept_out_models"] == fitted.get("rounds")


def context_line(metrics, manifest=None):
    c = metrics.get("context", {})
    by = ("a model trained as this one on every image but its fold"
          if kept_out(get(manifest or {}, "refer/fitted_data", {})) else "the cv round that never saw it")
    where = {"out_of_fold": f"out-of-fold answers (each image answered by {by})",
             "val": "validation images", "test": "test images"}.get(c.get("partition"), c.get("partition", "?"))
    if c.get("report_on_fitting_data"):
        where += " (they also fitted the operating point: optimistic)"
    precision = f", {c['precision']}" if c.get("precision") else ""
    return f"{metrics['n']:,} {where}; views `{c.get('tta', 'none')}`{precision}\n\n"


def block_report(model_dir):
    b = load(f"{model_dir}/metrics.json")
    m = load(f"{model_dir}/manifest.json")
    d = b.get("decision", {})
    wf, plain = d.get("without_floor", {}), d.get("plain", {})
    rows = [
        ("accuracy", f3(b["accuracy"]), f3(wf.get("accuracy")), f3(plain.get("accuracy"))),
        ("balanced accuracy (mean recall)", f"**{f3(b['balanced_accuracy'])}**", f3(wf.get("balanced_accuracy")),
         f3(plain.get("balanced_accuracy"))),
        ("melanoma recall", f"**{f3(b['melanoma_recall'])}**", f3(wf.get("melanoma_recall")),
         f3(plain.get("melanoma_recall"))),
        ("macro F1", f3(b["macro_f1"]), "", ""),
        ("macro ROC AUC (one-vs-rest)", f"**{f3(b['macro_auc'])}**", "", ""),
        ("malignant (mel+bcc+akiec) vs benign: AUC; sensitivity, specificity of the named class",
         f"{f3(b['malignant_auc'])}; {f3(b['malignant_sensitivity'])}, {f3(b['malignant_specificity'])}", "", ""),
        ("top-2 / top-3 accuracy", f"{f3(b['top2_accuracy'])} / {f3(b['top3_accuracy'])}", "", ""),
        ("melanoma sensitivity at 90% specificity", f3(b["melanoma_sensitivity_at_specificity_90"]), "", ""),
        ("ECE (15 bins), calibrated", f3(b["ece"]), "", ""),
    ]
    out = context_line(b, m)
    out += table(["metric", "served rule", "without the floor", "most probable class"], rows)
    out += "\n"
    rows = [(c, f3(v["precision"]), f3(v["recall"]), f3(v["f1"]), f3(v["auc"]), v["support"])
            for c, v in b["per_class"].items()]
    return out + table(["class", "precision", "recall", "F1", "AUC", "support"], rows)


def interval(x):
    lo, hi = x["ci95"]
    return f"**{pct(x['value'])}** [{100 * lo:.1f}, {100 * hi:.1f}] ({x['k']:,} of {x['n']:,})"


def block_referral(model_dir):
    b = load(f"{model_dir}/metrics.json")
    m = load(f"{model_dir}/manifest.json")
    r = b["referral"]
    # The margin the threshold was fitted with is the manifest's (the policy has the aim).
    p = dict(r["policy"], sensitivity_margin=get(m, "refer/sensitivity_margin", 0))
    out = context_line(b, m)
    out += f"Refer when {refer_policy(p)}; 95% Wilson intervals.\n\n"
    risk = r.get("risk_rule", {})
    names = [("malignant lesions referred (sensitivity)", "malignant_sensitivity"),
             ("melanomas referred", "melanoma_sensitivity"),
             ("benign lesions not referred (specificity)", "benign_specificity"),
             ("images referred", "refer_rate")]
    rows = [(label, interval(r[key]), pct(risk[key]["value"]) if key in risk else "–") for label, key in names]
    return out + table(["", "served rule", "risk rule alone"], rows)


CV_COLUMNS = [("balanced accuracy", "balanced_accuracy"),
              ("without the floor", "decision/without_floor/balanced_accuracy"),
              ("macro AUC", "macro_auc"), ("melanoma recall", "melanoma_recall"),
              ("accuracy", "accuracy"), ("macro F1", "macro_f1"), ("ECE", "ece"),
              ("malignant referred", "referral/malignant_sensitivity/value"),
              ("refer rate", "referral/refer_rate/value")]


def mean_sd(summary, digits=3):
    """A figure's summary over the rounds ({mean, sd, min, max, n}, as cv.json and the
    leave-one-round-out file write it) as "mean ± sd"; the mean alone for one round."""
    if not summary:
        return "–"
    if summary.get("n", 0) < 2:
        return f"{summary['mean']:.{digits}f}"
    return f"{summary['mean']:.{digits}f} ± {summary['sd']:.{digits}f}"


LOWER_IS_BETTER = {"ece", "referral/refer_rate/value"}


def block_cv(cv_dir):
    cv = load(f"{cv_dir}/cv.json")
    folds = sorted(cv["folds"], key=lambda f: f["fold"])
    rows = [[f"round {f['fold']}"] + [f3(f.get(k)) for _, k in CV_COLUMNS] +
            [f"{f.get('train_minutes', 0):.0f}"] for f in folds]
    rows.append([f"**mean ± sd ({len(folds)} of {cv['k']})**"] +
                [mean_sd(cv["summary"].get(k)) for _, k in CV_COLUMNS] +
                [mean_sd(cv.get("train_minutes"), 0)])
    return table(["", *[c for c, _ in CV_COLUMNS], "training min"], rows)


def block_loro(*pairs):
    out = []
    for pair in pairs:
        label, _, path = pair.partition("=")
        if not path:
            raise SystemExit(f"loro: expected LABEL=FILE, got {pair!r}")
        loro = load(path)
        rounds = sorted(loro["rounds"], key=lambda r: r["fold"])
        rows = [[f"round {r['fold']} ({r['n']:,} images)"] + [f3(r.get(k)) for _, k in CV_COLUMNS] +
                [f"{r.get('risk_threshold', float('nan')):.3f}"] for r in rounds]
        summary = loro["summary"]
        rows.append(["**mean ± sd**"] + [mean_sd(summary.get(k)) for _, k in CV_COLUMNS] + [""])
        # The worst round: the lowest of each figure, the highest ECE and refer rate.
        rows.append(["worst round"] + [
            f3(summary[k]["max" if k in LOWER_IS_BETTER else "min"]) if k in summary else "–"
            for _, k in CV_COLUMNS] + [""])
        out.append(f"{label}: each round scored at the operating point fitted on the other rounds' answers\n\n"
                   + table(["", *[c for c, _ in CV_COLUMNS], "risk threshold"], rows))
    return "\n".join(out)


def block_subgroups(cv_dir, *groupings):
    """cv.json's pooled subgroups: balanced accuracy mean [min, max] of the rounds,
    melanoma recall and malignant lesions referred pooled with 95% Wilson intervals."""
    subgroups = load(f"{cv_dir}/cv.json")["subgroups"]
    out = []
    for grouping in groupings or list(subgroups):
        if grouping not in subgroups:
            raise KeyError(f"no subgroups {grouping!r} in {cv_dir}/cv.json (it has {', '.join(subgroups)})")
        rows = []
        for g in subgroups[grouping]:
            b = g.get("balanced_accuracy") or {}
            rows.append([g["group"], f"{g['n']:,}",
                         f"{b['mean']:.3f} [{b['min']:.3f}, {b['max']:.3f}]" if b else "–",
                         pooled(g.get("melanoma_recall")), pooled(g.get("malignant_referred"))])
        out.append(table([grouping.replace("_", " "), "n", "balanced accuracy", "melanoma recall",
                          "malignant referred"], rows, ["---"] + ["---:"] * 4))
    return "\n".join(out)


def pooled(x):
    if not x or not x.get("n"):
        return "–"
    return f"{x['value']:.2f} [{x['ci95'][0]:.2f}, {x['ci95'][1]:.2f}] of {x['n']:,}"


def train_minutes(log_path):
    """(logged training minutes, median epoch seconds) of a train_log.jsonl; None without one."""
    path = pathlib.Path(log_path)
    if not path.exists():
        return None
    seconds = sorted(s for s in (json.loads(line).get("seconds") for line in path.read_text().splitlines()
                                 if line.strip()) if s is not None)
    if not seconds:
        return None
    n = len(seconds)
    median = seconds[n // 2] if n % 2 else (seconds[n // 2 - 1] + seconds[n // 2]) / 2
    return sum(seconds) / 60, median


def summary_of(values):
    """{mean, sd, n} of a list of numbers (sample sd), as mean_sd reads it."""
    n = len(values)
    if n == 0:
        return None
    mean = sum(values) / n
    sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else 0.0
    return {"mean": mean, "sd": sd, "n": n}


def block_kept_out(allbut_dir, loro_file):
    """Each round's model trained on every image but its test fold (`train --all_folds
    --fold N`: the shipped model's procedure), scored on that fold at the operating point
    fitted on the other rounds' answers (DIR/fold<N>_metrics.json of `skinlesion
    evaluate`), paired with the same round of the leave-one-round-out check of the
    rounds' own models (LORO_FILE): same test images, same source of the operating point."""
    loro = {r["fold"]: r for r in load(loro_file)["rounds"]}
    files = sorted((ROOT / allbut_dir).glob("fold*_metrics.json"))
    if not files:
        raise ValueError(f"no fold*_metrics.json in {allbut_dir}")
    rows, ours, theirs, diffs = [], {}, {}, {}
    for path in files:
        fold = int(path.name[len("fold"):-len("_metrics.json")])
        m = load(path)
        values = [get(m, k) for _, k in CV_COLUMNS]
        cost = train_minutes(ROOT / allbut_dir / f"fold{fold}" / "train_log.jsonl")
        rows.append([f"round {fold}, every image but its fold ({m['n']:,} images)"] + [f3(v) for v in values] +
                    [f"{cost[0]:.0f} ({cost[1]:.0f} s an epoch)" if cost else "–"])
        for (_, k), v in zip(CV_COLUMNS, values):
            if v is not None:
                ours.setdefault(k, []).append(v)
        if fold in loro:
            r = loro[fold]
            if r["n"] != m["n"]:
                raise ValueError(f"round {fold}: {m['n']} test images in {path}, {r['n']} in {loro_file}")
            rows.append([f"round {fold}, three folds (the rounds' model)"] + [f3(r.get(k)) for _, k in CV_COLUMNS] + [""])
            for (_, k), v in zip(CV_COLUMNS, values):
                if v is not None and r.get(k) is not None:
                    theirs.setdefault(k, []).append(r[k])
                    diffs.setdefault(k, []).append(v - r[k])
    rows.append([f"**mean ± sd, every image but the fold ({len(files)} rounds)**"] +
                [mean_sd(summary_of(ours.get(k, []))) for _, k in CV_COLUMNS] + [""])
    if diffs:
        paired = len(diffs[CV_COLUMNS[0][1]]) if CV_COLUMNS[0][1] in diffs else 0
        rows.append([f"mean ± sd, three folds (the same {paired} rounds)"] +
                    [mean_sd(summary_of(theirs.get(k, []))) for _, k in CV_COLUMNS] + [""])
        rows.append(["paired difference"] +
                    [f"{sum(diffs[k]) / len(diffs[k]):+.3f}" if diffs.get(k) else "–" for _, k in CV_COLUMNS] + [""])
    return table(["", *[c for c, _ in CV_COLUMNS], "training min"], rows)


BLOCKS = {"setup": block_setup, "subgroups": block_subgroups, "report": block_report, "referral": block_referral, "cv": block_cv,
          "loro": block_loro, "kept_out": block_kept_out}


def render(args_text):
    args = shlex.split(args_text)
    if not args or args[0] not in BLOCKS:
        raise SystemExit(f"unknown model_card block {args_text!r}; blocks: {', '.join(BLOCKS)}")
    try:
        return BLOCKS[args[0]](*args[1:])
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise SystemExit(f"model_card block {args_text!r}: {type(e).__name__}: {e}")


def rewrite(text):
    """(text with every block rewritten, the blocks' argument strings)."""
    blocks = []

    def one(match):
        blocks.append(match.group("args"))
        return match.group(1) + render(match.group("args")) + match.group(4)

    return BLOCK.sub(one, text), blocks


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("update", "check"):
        sub.add_parser(name).add_argument("card")
    show = sub.add_parser("show")
    show.add_argument("block", nargs="+")
    a = parser.parse_args()
    if a.command == "show":
        sys.stdout.write(render(shlex.join(a.block)))
        return 0
    card = pathlib.Path(a.card)
    text = card.read_text()
    new, blocks = rewrite(text)
    if not blocks:
        print(f"{card}: no <!-- model_card: ... --> blocks", file=sys.stderr)
        return 1
    if a.command == "update":
        card.write_text(new)
        print(f"{card}: {len(blocks)} blocks written")
        return 0
    if new != text:
        sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), new.splitlines(True), str(card),
                                                   "what tools/model_card.py writes"))
        print(f"{card}: figures differ from their files; run tools/model_card.py update {card}", file=sys.stderr)
        return 1
    print(f"{card}: {len(blocks)} blocks match their files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
