"""The model path against OpenAI's own CLIP code: a random ViT-B/16 in OpenAI's format, loaded
every way a user holds OpenAI's weights, must give OpenAI's features (QuickGELU, not GELU)."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import open_clip
import pytest
import torch

from orchestrator.cli import main
from tests.parity import oracle
from workers.errors import DorBenchError
from workers.models.clip import encode_image, encode_text, is_torchscript, load_clip
from workers.models.tokens import PromptTokenizer

TEXTS = [
    "a photo of a american bulldog.",
    "a photo of a Yorkshire terrier, a type of pet.",
    "X X X X 7-Eleven.",
    "a centered satellite photo of Annual Crop Land.",
]
HF_REPO = "timm/vit_base_patch16_clip_224.openai"  # open_clip's hub entry for ('ViT-B-16', 'openai')


@pytest.fixture(scope="module")
def openai_state() -> dict[str, torch.Tensor]:
    return oracle.random_vit_b16()


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def expected(openai_state, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    return oracle.features(openai_state, inputs, TEXTS)


def open_clip_state(openai_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights in open_clip's own state-dict format (what the hub and users' files hold)."""
    net = open_clip.model.build_model_from_openai_state_dict(dict(openai_state), cast_dtype=None)
    return {k: v.half() for k, v in net.state_dict().items()}


@torch.no_grad()
def bundle_features(clip, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return clip.model.encode_image(images), clip.model.encode_text(clip.tokenizer(TEXTS))


def assert_openai(clip, inputs, expected) -> None:
    image, text = bundle_features(clip, inputs)
    assert clip.activation == "QuickGELU"
    assert (image - expected[0]).abs().max() < 1e-4
    assert (text - expected[1]).abs().max() < 1e-4


def test_tokens_equal_openai() -> None:
    clip_tokenizer = open_clip.get_tokenizer("ViT-B-16")
    assert torch.equal(clip_tokenizer(TEXTS), oracle.tokenize(TEXTS))


def test_kept_token_ids_equal_openai() -> None:
    """The tokenizer that keeps each text's ids gives OpenAI's ids for fresh, kept, repeated and
    evicted texts, and tokenises a text again only once it has been evicted."""
    calls: list[list[str]] = []

    def counted(texts: list[str]) -> torch.Tensor:
        calls.append(texts)
        return open_clip.get_tokenizer("ViT-B-16")(texts)

    tokenize = PromptTokenizer(counted, kept=3)
    batches = [TEXTS[:2], [TEXTS[1], TEXTS[0], TEXTS[1]], TEXTS[1:], TEXTS[:1], []]
    for batch in batches:
        ids = tokenize(batch)
        assert ids.shape == (len(batch), 77) and ids.dtype == torch.int64
        if batch:
            assert torch.equal(ids, oracle.tokenize(batch))
    # the second batch was all kept; the third tokenised only its new texts; TEXTS[0] was the
    # least recently used of 4 texts with 3 kept, so the fourth batch tokenised it again
    assert calls == [TEXTS[:2], TEXTS[2:], TEXTS[:1], []]


@pytest.fixture(scope="module")
def torchscript_file(tmp_path_factory, openai_state) -> str:
    """OpenAI's own file format (``~/.cache/clip/ViT-B-16.pt``, what CoOp users hold): a TorchScript
    archive of the fp16 model."""
    net = oracle.model.build_model(dict(openai_state)).float().eval()
    scripted = torch.jit.trace_module(net, {"encode_text": oracle.tokenize(TEXTS[:1])}).half()
    path = tmp_path_factory.mktemp("clip-cache") / "ViT-B-16.pt"
    scripted.save(str(path))
    return str(path)


def test_openai_torchscript_file(torchscript_file, inputs, expected) -> None:
    assert is_torchscript(torchscript_file)
    assert_openai(load_clip("ViT-B-16", torchscript_file, device="cpu"), inputs, expected)


@pytest.fixture
def mha_slow_path():
    """torch's fused attention kernel (inference, batch-first only) rounds fp16 differently from
    the general one OpenAI's sequence-first blocks take: compare the computation, not the kernel."""
    torch.backends.mha.set_fastpath_enabled(False)
    yield
    torch.backends.mha.set_fastpath_enabled(True)


def test_fp16_is_openais_fp16_model(torchscript_file, openai_state, inputs, expected, mha_slow_path) -> None:
    """``precision: fp16`` (``auto`` on a GPU) is the model the references train on a GPU: OpenAI's
    ``build_model`` converts the weights to fp16 and ``clip.load`` keeps them so off the CPU.
    Features equal OpenAI's fp16 ones bit for bit, through open_clip's towers and dor-bench's own
    encoders alike (``auto`` on the CPU is fp32, as ``clip.load`` there: the tests above)."""
    clip = load_clip("ViT-B-16", torchscript_file, device="cpu", precision="fp16")
    net = oracle.model.build_model(dict(openai_state)).eval()  # fp16: no .float(), as on a GPU
    tokens = oracle.tokenize(TEXTS)
    with torch.no_grad():
        theirs = net.encode_image(inputs.half()), net.encode_text(tokens)
        ours = bundle_features(clip, inputs.half())
        full = replace(clip, full_text_context=True)
        own = encode_image(clip, inputs), encode_text(full, clip.tokenizer(TEXTS), normalize=False)
    assert clip.dtype == theirs[0].dtype == ours[0].dtype == torch.float16
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    assert torch.equal(own[0], theirs[0].float()) and torch.equal(own[1], theirs[1].float())
    assert (theirs[0].float() - expected[0]).abs().max() > 1e-3  # fp16 is a computation of its own


def test_trial_command_runs_on_an_openai_torchscript_file(torchscript_file, capsys) -> None:
    assert (
        main(
            [
                "trial",
                "--method",
                "zeroshot",
                "--dataset",
                "shapes",
                "--model",
                "ViT-B-16",
                "--pretrained",
                torchscript_file,
                "--shots",
                "1",
                "--test-per-class",
                "1",
                "--json",
                "--quiet",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["info"]["activation"] == "QuickGELU"
    assert result["metrics"]["base/n"] == 30 and result["spec"]["pretrained"] == torchscript_file


def test_openai_tag_from_offline_hub_cache(tmp_path, monkeypatch, openai_state, inputs, expected) -> None:
    """``pretrained: openai`` read from a Hugging Face cache with the hub offline; open_clip's own
    ``create_model`` on the same files is GELU, which is what dor-bench did before."""
    snapshot = tmp_path / f"models--{HF_REPO.replace('/', '--')}" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    torch.save(open_clip_state(openai_state), snapshot / "open_clip_pytorch_model.bin")
    (tmp_path / f"models--{HF_REPO.replace('/', '--')}" / "refs").mkdir()
    (tmp_path / f"models--{HF_REPO.replace('/', '--')}" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clip = load_clip("ViT-B-16", "openai", device="cpu", cache_dir=str(tmp_path))
    assert_openai(clip, inputs, expected)
    plain = open_clip.create_model("ViT-B-16", pretrained="openai", cache_dir=str(tmp_path)).eval()
    image, _ = bundle_features(clip.__class__(**{**vars(clip), "model": plain}), inputs)
    assert (image - expected[0]).abs().max() > 1e-3  # GELU: the divergence this test guards


def test_quickgelu_architecture_with_state_dict_file(tmp_path, openai_state, inputs, expected) -> None:
    """A plain state-dict file of OpenAI weights says nothing of its activation: the
    ``-quickgelu`` architecture is how a user says so."""
    buffer = io.BytesIO()
    torch.save(open_clip_state(openai_state), buffer)
    path = tmp_path / "openai-weights.bin"
    path.write_bytes(buffer.getvalue())
    assert not is_torchscript(str(path))
    quick = load_clip("ViT-B-16-quickgelu", str(path), device="cpu")
    assert_openai(quick, inputs, expected)
    gelu = load_clip("ViT-B-16", str(path), device="cpu")
    assert gelu.activation == "GELU"
    # same weights, other activation: other fingerprints, so no cached feature or pool is shared
    assert gelu.visual_fingerprint != quick.visual_fingerprint
    assert gelu.text_fingerprint != quick.text_fingerprint


def test_torchscript_of_another_architecture_is_refused(torchscript_file) -> None:
    with pytest.raises(DorBenchError, match="does not hold a ViT-B-32: patch size 16"):
        load_clip("ViT-B-32", torchscript_file, device="cpu")
