"""Model and method names without torch are the same names the torch side loads."""

from __future__ import annotations

import subprocess
import sys

import open_clip

import workers.models.clip  # noqa: F401  (registers dor-bench's configs with open_clip)
from workers.methods import METHODS
from workers.models.names import architectures, default_pretrained, pretrained_tags


def test_architectures_are_open_clips_list_read_without_importing_it():
    assert architectures() == open_clip.list_models()
    assert {"micro-clip", "tiny-clip", "ViT-B-16", "ViT-B-16-quickgelu"} <= set(architectures())


def test_pretrained_tags_and_defaults():
    assert default_pretrained("micro-clip") == "shapes"
    assert default_pretrained("ViT-B-16") == "openai" and "laion2b_s34b_b88k" in pretrained_tags("ViT-B-16")
    assert default_pretrained("tiny-clip") is None


def test_every_method_card_names_a_builder():
    for name in METHODS:
        card = METHODS.get(name)
        method = card.method()
        assert method.name == name and callable(method.build)
        assert card.trains == (name != "zeroshot") and set(card.defaults) >= (
            {"epochs", "lr"} if card.trains else set()
        )


def test_checking_a_settings_file_imports_no_torch(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndatasets: [shapes]\nmodel: {arch: ViT-B-16}\nmethods: [cop]\n")
    good = tmp_path / "good.yaml"
    good.write_text("name: x\ndatasets: [shapes]\nmodel: {arch: micro-clip}\nmethods: [coop]\nseeds: [1, 2]\n")
    code = (
        "import sys\nfrom orchestrator.cli import main\n"
        f"assert main(['validate', {str(bad)!r}]) == 2\nassert main(['validate', {str(good)!r}]) == 0\n"
        "print(sorted(m for m in ('torch', 'open_clip', 'ray', 'mlflow') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "unknown method 'cop'" in out.stderr and "4 trials" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "[]"
