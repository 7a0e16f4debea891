#!/usr/bin/python3
"""tools/model_card.py on the committed bundled model and cv folder (ctest model_card_script)."""
import json
import pathlib
import subprocess
import sys
import tempfile
import unittest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "model_card.py"
CARD = """# A card

Prose the script leaves alone.

<!-- model_card: setup models/bundled -->
stale
<!-- /model_card -->

More prose.

<!-- model_card: report models/bundled -->
<!-- /model_card -->

<!-- model_card: referral models/bundled -->
<!-- /model_card -->

<!-- model_card: cv docs/cv/36ep_160_balmix_oof -->
<!-- /model_card -->
"""


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


class ModelCardTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.card = pathlib.Path(self.dir.name) / "MODEL_CARD.md"
        self.card.write_text(CARD)

    def tearDown(self):
        self.dir.cleanup()

    def test_update_then_check(self):
        self.assertEqual(run("check", str(self.card)).returncode, 1)  # "stale", empty blocks
        done = run("update", str(self.card))
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("4 blocks written", done.stdout)
        text = self.card.read_text()
        self.assertIn("Prose the script leaves alone.", text)
        self.assertIn("More prose.", text)
        self.assertNotIn("stale", text)
        checked = run("check", str(self.card))
        self.assertEqual(checked.returncode, 0, checked.stdout + checked.stderr)
        self.assertIn("4 blocks match", checked.stdout)

    def test_figures_come_from_the_files(self):
        run("update", str(self.card))
        text = self.card.read_text()
        manifest = json.loads((ROOT / "models/bundled/manifest.json").read_text())
        metrics = json.loads((ROOT / "models/bundled/metrics.json").read_text())
        cv = json.loads((ROOT / "docs/cv/36ep_160_balmix_oof/cv.json").read_text())
        self.assertIn(f"**{manifest['refer']['malignancy_risk_threshold']:.3f}**", text)
        self.assertIn(f"sha256 `{manifest['sha256'][:12]}`", text)
        # The bundled model draws a kept-out round's pool per epoch (samples_per_epoch).
        draws = manifest["training"]["config"].get("samples_per_epoch")
        self.assertTrue(draws)
        self.assertIn(f"epochs of {draws:,} images drawn", text)
        self.assertIn(f"- {manifest['decision']['tau']:.2f} log prior(class)", text)
        self.assertIn(f"| balanced accuracy (mean recall) | **{metrics['balanced_accuracy']:.3f}** |", text)
        ref = metrics["referral"]["malignant_sensitivity"]
        self.assertIn(f"({ref['k']} of {ref['n']})", text)
        for fold in cv["folds"]:
            self.assertIn(f"| round {fold['fold']} | {fold['balanced_accuracy']:.3f} |", text)
        self.assertIn(f"({len(cv['folds'])} of {cv['k']})", text)

    def test_an_edited_figure_fails_the_check(self):
        run("update", str(self.card))
        text = self.card.read_text()
        metrics = json.loads((ROOT / "models/bundled/metrics.json").read_text())
        figure = f"**{metrics['macro_auc']:.3f}**"
        self.assertIn(figure, text)
        self.card.write_text(text.replace(figure, "**0.999**"))
        checked = run("check", str(self.card))
        self.assertEqual(checked.returncode, 1)
        self.assertIn("+| macro ROC AUC (one-vs-rest) | " + figure, checked.stdout)  # The diff says what.
        self.assertIn("figures differ from their files", checked.stderr)

    def test_leave_one_round_out_block(self):
        out = run("show", "loro", "flips=docs/cv/ship_out_of_fold_mechanics/leave_one_round_out_flips.json")
        self.assertEqual(out.returncode, 0, out.stderr)
        loro = json.loads((ROOT / "docs/cv/ship_out_of_fold_mechanics/leave_one_round_out_flips.json").read_text())
        sens = [r["referral/malignant_sensitivity/value"] for r in loro["rounds"]]
        self.assertIn("flips: each round scored at the operating point fitted on the other rounds' answers",
                      out.stdout)
        worst = [line for line in out.stdout.splitlines() if line.startswith("| worst round")]
        self.assertEqual(len(worst), 1)
        self.assertIn(f"| {min(sens):.3f} |", worst[0])

    def test_subgroups_block(self):
        out = run("show", "subgroups", "docs/cv/36ep_160_balmix_oof", "source")
        self.assertEqual(out.returncode, 0, out.stderr)
        cv = json.loads((ROOT / "docs/cv/36ep_160_balmix_oof/cv.json").read_text())
        for g in cv["subgroups"]["source"]:
            b, mel = g["balanced_accuracy"], g["melanoma_recall"]
            self.assertIn(f"| {g['group']} | {g['n']:,} | {b['mean']:.3f} [{b['min']:.3f}, {b['max']:.3f}] | "
                          f"{mel['value']:.2f} [{mel['ci95'][0]:.2f}, {mel['ci95'][1]:.2f}] of {mel['n']} |",
                          out.stdout)
        self.assertNotIn("| sex |", out.stdout)  # Only the groupings asked for.
        out = run("show", "subgroups", "docs/cv/36ep_160_balmix_oof", "shoe_size")
        self.assertIn("no subgroups 'shoe_size'", out.stderr)

    def test_kept_out_block(self):
        d = pathlib.Path(self.dir.name)

        def metrics(bal, mel, n=100):
            return {"n": n, "balanced_accuracy": bal, "melanoma_recall": mel, "macro_auc": 0.9,
                    "decision": {"without_floor": {"balanced_accuracy": bal - 0.01}},
                    "referral": {"malignant_sensitivity": {"value": 0.9}, "refer_rate": {"value": 0.4}}}

        (d / "fold0_metrics.json").write_text(json.dumps(metrics(0.66, 0.70)))
        (d / "fold2_metrics.json").write_text(json.dumps(metrics(0.62, 0.80)))
        (d / "fold0").mkdir()
        (d / "fold0" / "train_log.jsonl").write_text("".join(json.dumps({"epoch": e, "seconds": 60.0 + e}) + "\n"
                                                         for e in range(3)))
        loro = {"rounds": [{"fold": 0, "n": 100, "balanced_accuracy": 0.64, "melanoma_recall": 0.72},
                           {"fold": 1, "n": 100, "balanced_accuracy": 0.50},
                           {"fold": 2, "n": 100, "balanced_accuracy": 0.61, "melanoma_recall": 0.70}]}
        (d / "loro.json").write_text(json.dumps(loro))
        out = run("show", "kept_out", str(d), str(d / "loro.json"))
        self.assertEqual(out.returncode, 0, out.stderr)
        lines = out.stdout.splitlines()
        row = lambda prefix: next(l for l in lines if l.startswith(prefix))
        self.assertIn("| 0.660 | 0.650 | 0.900 | 0.700 |", row("| round 0, every image but its fold (100 images)"))
        self.assertIn("| 3 (61 s an epoch) |", row("| round 0, every image"))
        self.assertIn("| 0.640 | – | – | 0.720 |", row("| round 0, three folds"))
        # Means over the two rounds kept out, and over the same rounds of the check (not round 1).
        self.assertIn("| 0.640 ± 0.028 |", row("| **mean ± sd, every image but the fold (2 rounds)**"))
        self.assertIn("| 0.625 ± 0.021 |", row("| mean ± sd, three folds (the same 2 rounds)"))
        paired = row("| paired difference")
        self.assertIn("| +0.015 |", paired)  # ((0.66 - 0.64) + (0.62 - 0.61)) / 2
        self.assertIn("| +0.040 |", paired)  # melanoma recall: (-0.02 + 0.10) / 2
        # Different test images in the two files: refused.
        loro["rounds"][2]["n"] = 99
        (d / "loro.json").write_text(json.dumps(loro))
        out = run("show", "kept_out", str(d), str(d / "loro.json"))
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("round 2: 100 test images", out.stderr)

    def test_margin_and_kept_out_answers_are_named(self):
        sys.path.insert(0, str(SCRIPT.parent))
        import model_card
        p = {"malignancy_risk_threshold": 0.12, "target_sensitivity": 0.9, "sensitivity_confidence": 0.95,
             "min_confidence": 0.5, "min_margin": 0.1}
        self.assertIn("(target malignant sensitivity 0.90 at 95% confidence", model_card.refer_policy(p))
        p["sensitivity_margin"] = 0.03
        self.assertIn("(target malignant sensitivity 0.90, fitted for 0.93 (margin 0.03) at 95% confidence",
                      model_card.refer_policy(p))
        fitted = {"partition": "out_of_fold", "images": 5984, "rounds": 5}
        self.assertEqual(model_card.fitted_on(fitted), "the 5,984 out-of-fold answers of 5 cv rounds")
        fitted["kept_out_models"] = 4  # Not every round's: said so.
        self.assertEqual(model_card.fitted_on(fitted), "the 5,984 out-of-fold answers of 5 rounds (4 of them of "
                         "models trained as this one on every image but the fold they answered)")
        fitted["kept_out_models"] = 5
        self.assertEqual(model_card.fitted_on(fitted), "the 5,984 answers of 5 models trained as this one on "
                         "every image but the fold they answered")

    def test_errors(self):
        self.card.write_text("# no blocks\n")
        self.assertEqual(run("check", str(self.card)).returncode, 1)
        self.card.write_text("<!-- model_card: frobnicate x -->\n<!-- /model_card -->\n")
        out = run("update", str(self.card))
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("unknown model_card block 'frobnicate x'", out.stderr)
        out = run("show", "report", "no/such/model")
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("No such file", out.stderr)
        out = run("show", "loro", "no-equals-sign")
        self.assertIn("expected LABEL=FILE", out.stderr)


if __name__ == "__main__":
    unittest.main()
