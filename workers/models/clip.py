"""Load a CLIP model by open_clip architecture name and pretrained tag, ready for dor-bench.

dor-bench's own small architectures (``tiny-clip``, ``micro-clip``) are open_clip JSON model
configs shipped in ``workers/models/configs``; they load exactly like any open_clip model.

OpenAI's CLIP weights were trained with QuickGELU, and OpenAI's ``clip`` code (which CoOp, DAC and
the DOR trainers use) builds them so. open_clip's plain ``ViT-B-16`` config is GELU, so
``load_clip`` builds QuickGELU wherever the weights are OpenAI's: a pretrained tag whose open_clip
record says so (``openai``), an OpenAI TorchScript file (``~/.cache/clip/ViT-B-16.pt``), or an
architecture named ``*-quickgelu``. A plain state-dict file of OpenAI weights cannot say where it
comes from: load it with the ``-quickgelu`` architecture (e.g. ``ViT-B-16-quickgelu``).
"""

from __future__ import annotations

import functools
import hashlib
import os
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from torch import nn

from workers.errors import DorBenchError, NotFoundError, did_you_mean
from workers.models.names import CONFIG_DIR, SHIPPED_WEIGHTS, names_a_file, pretrained_tags
from workers.models.precision import DEFAULT_PRECISION, weights_precision
from workers.models.tokens import PromptTokenizer

open_clip.add_model_config(CONFIG_DIR)

#: Seed for random-init weights (``pretrained=None``): the same architecture always gets the
#: same weights, so results and feature caches stay reproducible.
RANDOM_INIT_SEED = 0


@dataclass
class ClipBundle:
    """A loaded CLIP with everything a trial needs next to it."""

    model: open_clip.CLIP
    tokenizer: Callable[[list[str]], torch.Tensor]  # token ids on the CPU
    arch: str
    pretrained: str | None
    image_size: int
    device: torch.device
    visual_fingerprint: str  # changes whenever the image tower's weights or structure change
    text_fingerprint: str  # likewise for the text side
    activation: str  # the MLP activation the towers run ("QuickGELU" for OpenAI's weights)
    # encode every prompt at the full context (the reference's 77 tokens) instead of up to the
    # batch's last EOT: equal within floating-point noise, so a way to run, not a result
    full_text_context: bool = False

    @property
    def dtype(self) -> torch.dtype:
        """The precision the towers compute in (their weights'; layer norms run in fp32)."""
        return self.model.transformer.get_cast_dtype()

    @functools.cached_property
    def logit_scale(self) -> float:
        # read once: the weights are frozen, and reading a GPU value each step would wait for the GPU
        return float(self.model.logit_scale.exp())


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise DorBenchError(f"Unknown device '{device}'.", "use auto, cpu or cuda[:i].") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise DorBenchError(
            f"Device '{device}' was asked for, but torch sees no CUDA device here.",
            "use --device cpu (or auto), or install a torch build for this machine's CUDA driver.",
        )
    return chosen


def fingerprint(module: nn.Module) -> str:
    """A hash of a module's structure (its repr: layers, sizes, activations) and of its parameters
    and buffers (exact: any changed weight, or GELU for QuickGELU, changes it)."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(repr(module).encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_clip(
    arch: str = "ViT-B-16",
    pretrained: str | None = "openai",
    device: str = "auto",
    cache_dir: str | None = None,
    precision: str = DEFAULT_PRECISION,
) -> ClipBundle:
    """Create a CLIP model in eval mode with frozen weights, its tokenizer and weight fingerprints.

    Args:
        arch: an open_clip architecture (``dor-bench ls models``), e.g. ``ViT-B-16`` or ``micro-clip``.
        pretrained: an open_clip pretrained tag (``openai``), a path to a checkpoint file (an
            open_clip state dict, or OpenAI's TorchScript file such as ``~/.cache/clip/ViT-B-16.pt``),
            or ``None``/``"none"`` for random init (seeded, so always the same weights). OpenAI's
            weights get QuickGELU (see the module docstring).
        device: ``auto``, ``cpu`` or ``cuda[:i]``.
        cache_dir: where open_clip caches downloaded weights (default: the Hugging Face cache).
        precision: one of ``precision.PRECISIONS`` (``auto``: fp16 on a GPU, fp32 on a CPU). In fp16 the
            weights are converted as OpenAI's ``convert_weights`` converts them: layer norms
            compute in fp32, embeddings are cast at use.

    Raises:
        NotFoundError: unknown architecture or pretrained tag (with "did you mean").
        DorBenchError: weights that cannot be fetched, with how to pre-download them.
    """
    if arch not in open_clip.list_models():
        raise NotFoundError(
            f"Unknown model architecture '{arch}'.{did_you_mean(arch, open_clip.list_models())}",
            "run `dor-bench ls models` for the list.",
        )
    if pretrained is not None and pretrained.lower() == "none":
        pretrained = None
    dev = resolve_device(device)
    precision = weights_precision(precision, dev)
    tag = pretrained
    shipped = SHIPPED_WEIGHTS.get(arch, {})
    if pretrained in shipped:
        pretrained = str(shipped[pretrained])
    elif pretrained is not None and not os.path.isfile(pretrained):
        _check_weights_path(pretrained)
        _check_tag(arch, pretrained)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        try:
            if pretrained is not None and is_torchscript(pretrained):
                model = open_clip.load_openai_model(pretrained, precision=precision, device=dev)
                _check_architecture(arch, model, pretrained)
            else:
                model = open_clip.create_model(
                    arch,
                    pretrained=pretrained,
                    precision=precision,
                    device=dev,
                    cache_dir=cache_dir,
                    force_quick_gelu=openai_weights(arch, tag),
                )
        except DorBenchError:
            raise
        except Exception as err:  # unpickling a user's file can raise almost anything
            if pretrained is not None and os.path.isfile(pretrained):
                raise _checkpoint_error(arch, pretrained, err) from None
            if pretrained is None or not isinstance(err, RuntimeError):
                raise
            raise _weights_error(arch, pretrained, cache_dir, err) from None
    model.eval().requires_grad_(False)
    image_size = model.visual.image_size
    return ClipBundle(
        model=model,
        tokenizer=PromptTokenizer(open_clip.get_tokenizer(arch)),
        arch=arch,
        pretrained=tag,
        image_size=image_size[0] if isinstance(image_size, (tuple, list)) else int(image_size),
        device=dev,
        visual_fingerprint=fingerprint(model.visual),
        text_fingerprint=fingerprint(_text_side(model)),
        activation=type(model.transformer.resblocks[0].mlp.gelu).__name__,
    )


def eot_positions(model: open_clip.CLIP, tokens: torch.Tensor) -> torch.Tensor | None:
    """Each prompt's end-of-text position, where the text tower reads its features; None for a
    tower that pools some other way (first or last position, mean)."""
    if model.text_pool_type == "argmax":  # OpenAI's tokenizer: EOT has the largest id
        return tokens.argmax(dim=-1)
    if model.text_pool_type == "eos":
        return (tokens == model.text_eos_id).int().argmax(dim=-1)
    return None


def encode_text(
    clip: ClipBundle,
    tokens: torch.Tensor,
    context: torch.Tensor | None = None,
    deep_context: Sequence[torch.Tensor | None] = (),
    normalize: bool = True,
) -> torch.Tensor:
    """Float32 features of a prompt batch through CLIP's frozen text tower, L2-normalised unless
    ``normalize`` is False: the one text encoder of every method, anchor and outlier pool.

    The tower is causal and reads each prompt at its EOT token, so the positions after the batch's
    last EOT cannot change any feature: the batch is encoded only up to there (with the positional
    embedding and causal mask cut to that length), unless ``clip.full_text_context`` asks for the
    whole context as the reference code runs it, or the tower is not causal or pools elsewhere.

    Args:
        tokens: ``[P, L]`` token ids from ``clip.tokenizer``, best left on the CPU: the length is
            read from them there, without waiting for the device.
        context: learned vectors for positions 1..n_ctx: ``[n_ctx, W]`` shared by all prompts, or
            ``[P, n_ctx, W]`` per prompt; None encodes the tokens as they are.
        deep_context: replacements for those positions at the input of layers 1..len(deep_context)
            (MaPLe's deeper text prompts), each ``[n_ctx, W]`` or per prompt ``[P, n_ctx, W]``
            (TCP's class-aware tokens); None leaves a layer's input as it is.
    """
    model = clip.model
    dtype = model.transformer.get_cast_dtype()
    n_ctx = 0 if context is None else context.shape[-2]
    eot = eot_positions(model, tokens)
    if not clip.full_text_context and eot is not None and model.attn_mask is not None:
        tokens = tokens[:, : max(int(eot.max()) + 1, 1 + n_ctx)]
    tokens = tokens.to(clip.device, non_blocking=True)
    eot = None if eot is None else eot.to(clip.device, non_blocking=True)
    length = tokens.shape[1]
    with torch.no_grad():
        x = model.token_embedding(tokens).to(dtype)
    if context is not None:
        if context.dim() == 2:
            context = context.unsqueeze(0).expand(len(tokens), -1, -1)
        x = torch.cat([x[:, :1], context.to(dtype), x[:, 1 + n_ctx :]], dim=1)
    x = x + model.positional_embedding[:length].to(dtype)
    mask = None if model.attn_mask is None else model.attn_mask[:length, :length]
    for depth, block in enumerate(model.transformer.resblocks):
        deep = deep_context[depth - 1] if 1 <= depth <= len(deep_context) else None
        if deep is not None:
            x = torch.cat([x[:, :1], deep.to(dtype).expand(len(x), -1, -1), x[:, 1 + n_ctx :]], dim=1)
        x = block(x, attn_mask=mask)
    x = model.ln_final(x)
    if eot is None:
        x = text_global_pool(x, tokens, model.text_pool_type)
    else:
        x = x[torch.arange(len(x), device=x.device), eot]
    projection = model.text_projection
    if projection is not None:
        x = projection(x) if isinstance(projection, nn.Linear) else x @ projection
    return F.normalize(x.float(), dim=-1) if normalize else x.float()


def encode_image(clip: ClipBundle, images: torch.Tensor, prompts: Sequence[torch.Tensor] = ()) -> torch.Tensor:
    """Float32 features (not normalised) of images through CLIP's vision transformer with deep
    visual prompts, placed as IVLP's and MaPLe's code place them: ``prompts[0]`` (``[n_ctx, W]``)
    appended after the positional embedding, ``prompts[d]`` replacing them at the input of layer
    d; the tower pools without them. No prompts: CLIP's own image features."""
    visual = clip.model.visual
    dtype = visual.conv1.weight.dtype
    n_ctx = prompts[0].shape[0] if prompts else 0
    x = visual.conv1(images.to(dtype))
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(dtype)
    x = visual.patch_dropout(x)
    if prompts:
        x = torch.cat([x, prompts[0].to(dtype).expand(len(x), -1, -1)], dim=1)
    x = visual.ln_pre(x)
    for depth, block in enumerate(visual.transformer.resblocks):
        if 1 <= depth < len(prompts):
            x = torch.cat([x[:, : x.shape[1] - n_ctx], prompts[depth].to(dtype).expand(len(x), -1, -1)], dim=1)
        x = block(x)
    pooled, _ = visual._pool(x[:, : x.shape[1] - n_ctx])
    if visual.proj is not None:
        pooled = pooled @ visual.proj
    return pooled.float()


def openai_weights(arch: str, tag: str | None) -> bool:
    """True when ``tag`` names weights that open_clip records as trained with QuickGELU (OpenAI's)."""
    if tag is None or arch in SHIPPED_WEIGHTS or os.path.isfile(tag):
        return False
    return bool(open_clip.get_pretrained_cfg(arch, tag).get("quick_gelu", False))


def is_torchscript(path: str) -> bool:
    """True for a TorchScript archive (OpenAI's own ``ViT-B-16.pt``); False for a plain checkpoint."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist())


def _check_architecture(arch: str, model: open_clip.CLIP, path: str) -> None:
    """An OpenAI TorchScript file carries its own architecture: it must be the one asked for."""
    config = open_clip.get_model_config(arch) or {}
    vision, text = config.get("vision_cfg", {}), config.get("text_cfg", {})
    found = {
        "vision width": model.visual.conv1.out_channels,
        "vision layers": len(model.visual.transformer.resblocks),
        "patch size": model.visual.conv1.kernel_size[0],
        "text width": model.token_embedding.weight.shape[1],
        "text layers": len(model.transformer.resblocks),
    }
    wanted = {
        "vision width": vision.get("width"),
        "vision layers": vision.get("layers"),
        "patch size": vision.get("patch_size"),
        "text width": text.get("width"),
        "text layers": text.get("layers"),
    }
    wrong = [f"{k} {found[k]} (not {wanted[k]})" for k in found if found[k] != wanted[k]]
    if wrong:
        raise DorBenchError(
            f"The OpenAI TorchScript file '{path}' does not hold a {arch}: {', '.join(wrong)}.",
            "pass the architecture the file was made for (e.g. ViT-B-32 for ViT-B-32.pt).",
        )


def _text_side(model: open_clip.CLIP) -> nn.Module:
    """The modules (and parameters) that make up CLIP's text tower."""
    side = nn.Module()
    for name in ("transformer", "token_embedding", "ln_final"):
        side.add_module(name, getattr(model, name))
    for name in ("positional_embedding", "text_projection", "logit_scale"):
        side.register_parameter(name, getattr(model, name))
    return side


def _check_tag(arch: str, tag: str) -> None:
    tags = pretrained_tags(arch)
    if tag not in tags:
        known = ", ".join(tags) if tags else "none (use --pretrained none, or a checkpoint file)"
        raise NotFoundError(
            f"Unknown pretrained tag '{tag}' for model '{arch}'.{did_you_mean(tag, tags)}",
            f"tags known for {arch}: {known}; or pass the path of a checkpoint file.",
        )


def _check_weights_path(pretrained: str) -> None:
    """A ``pretrained`` value that names a file (a folder in it, or a weights ending) but is none."""
    if not names_a_file(pretrained):
        return
    what = "is a folder, not a file" if os.path.isdir(pretrained) else "does not exist"
    raise NotFoundError(
        f"The weights file '{pretrained}' {what}.",
        "pass the path of a checkpoint file (a relative path is read from the current folder), "
        "a pretrained tag (`dor-bench ls models`), or none for random init.",
    )


def _checkpoint_error(arch: str, path: str, err: Exception) -> DorBenchError:
    """What is wrong with a weights file that did not load: unreadable, not a checkpoint at all,
    or a checkpoint of another architecture (told apart by reading it again, on this path only)."""
    if isinstance(err, OSError):
        return DorBenchError(
            f"The weights file '{path}' cannot be read ({err.strerror or _first_lines(err)}).",
            "make it readable, or pass another checkpoint file.",
        )
    from open_clip.factory import load_state_dict

    try:
        load_state_dict(path)
    except Exception as unreadable:  # torch.load's errors on foreign bytes have no common type
        return DorBenchError(
            f"The weights file '{path}' is not a checkpoint: torch cannot read model weights from it "
            f"({_first_lines(unreadable)}).",
            "pass a PyTorch checkpoint: an open_clip state dict (.pt, .bin), a .safetensors file or OpenAI's "
            "TorchScript file; if it was downloaded, download it again (it may be cut short).",
        )
    return DorBenchError(
        f"The weights file '{path}' is a checkpoint, but not of a {arch}: its weights do not fit "
        f"({_first_lines(err)}).",
        "set the architecture it was saved from (model.arch, or --model), or pass a checkpoint of a "
        f"{arch}; OpenAI's state dicts load with the *-quickgelu architectures.",
    )


def _first_lines(err: Exception, limit: int = 240) -> str:
    """``Type: the first lines of the message``, cut to ``limit`` characters."""
    # torch's weights-only unpickler puts its reason after advice that does not apply here
    parts = str(err).split("WeightsUnpickler error:", 1)
    lines = [line.strip() for line in parts[-1].splitlines() if line.strip()]
    message = " ".join(lines[: 3 - len(parts)])  # the unpickler's reason is one line; others may need two
    message = message if len(message) <= limit else message[: limit - 3] + "..."
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


def _weights_error(arch: str, tag: str, cache_dir: str | None, err: Exception) -> DorBenchError:
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    source = cfg.get("hf_hub") or cfg.get("url") or "open_clip's registry"
    cache = (
        cache_dir
        or os.environ.get("HF_HUB_CACHE")
        or os.path.join(os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub")
    )
    offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
    return DorBenchError(
        f"Could not load the pretrained weights '{tag}' for {arch} from {source}{offline}: {err}",
        "on a machine with internet, run "
        f"`python -c \"import open_clip; open_clip.create_model('{arch}', pretrained='{tag}')\"` "
        f"to fill the weights cache ({cache}) and copy that folder here, or pass the path of the "
        "checkpoint file as the pretrained tag (--pretrained /path/to/weights.bin).",
    )
