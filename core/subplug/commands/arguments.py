"""The options every command that runs the engine shares, and the one place that turns
them into :class:`~subplug.types.GenerateOptions` / :class:`~subplug.types.BackendOptions`.

``generate``, ``live`` and plugin commands (the Kdenlive adapter) add their arguments
with these helpers and build their options with :func:`backend_options` and
:func:`generate_options`, so an option added here reaches all of them. Nothing heavy is
imported: ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from subplug.errors import SubplugError


def parse_csv(value: str) -> tuple[str, ...]:
    """An argparse ``type``: ``"en, mn"`` → ``("en", "mn")`` (empty parts dropped)."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


def add_engine_arguments(
    parser: argparse._ActionsContainer,
    *,
    detects: str = "",
    targets: bool = True,
    formats: bool = False,
    model_default: str = "the backend's",
    source_default: str = "auto",
    backend_default: str = "gemma3n",
) -> None:
    """Add the options of a command that runs the engine, in this order: ``--source``,
    ``--targets`` (when ``targets``), ``--format`` (when ``formats``; dest ``formats``),
    ``--model``, ``--backend`` and ``--device``.

    ``detects`` says what auto-detection works on, for the ``--source`` help ("per
    chunk"); ``model_default`` names the model used when ``--model`` is left out, in
    its help. ``parser`` may be an argument group.
    """
    detects_help = f"auto detects it {detects}" if detects else "auto detects it"
    parser.add_argument(
        "--source",
        default=source_default,
        choices=["auto", "en", "mn"],
        help=f"spoken language; {detects_help} (default: {source_default})",
    )
    if targets:
        parser.add_argument(
            "--targets",
            default="en,mn",
            type=parse_csv,
            metavar="LANGS",
            help="subtitle languages, comma-separated (default: en,mn)",
        )
    if formats:
        parser.add_argument(
            "--format",
            dest="formats",
            default="ass,srt",
            type=parse_csv,
            metavar="FORMATS",
            help="ass (bilingual), srt, vtt; comma-separated (default: ass,srt)",
        )
    parser.add_argument(
        "--model",
        default=None,
        metavar="NAME|PATH",
        help=f"model cache name or folder (default: {model_default})",
    )
    parser.add_argument(
        "--backend",
        default=backend_default,
        metavar="NAME",
        help=f"model backend (default: {backend_default})",
    )
    parser.add_argument(
        "--device",
        default="auto",
        metavar="DEVICE",
        help="auto, cuda, cuda:N, mps or cpu (default: auto)",
    )


def add_precision_arguments(parser: argparse._ActionsContainer) -> None:
    """Add ``--dtype``, ``--quantize`` and ``--vocab``: how the model's numbers are
    stored and computed (docs/performance.md has the figures behind the defaults)."""
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "bf16", "fp16", "fp32", "bf16-upcast"],
        help="float precision of an unquantised model (default: the fastest measured for "
        "the device; bf16-upcast: CPU, bf16 weights with float32 matrix products)",
    )
    parser.add_argument(
        "--quantize",
        default="auto",
        choices=["auto", "none", "int8", "int4"],
        help="store the large matrices as integers (default auto: int8 on a CPU, none on "
        "a GPU; int4: about half int8's memory, slower)",
    )
    parser.add_argument(
        "--vocab",
        default="auto",
        choices=["auto", "full", "en-mn"],
        help="en-mn keeps only the tokens English and Mongolian need (default auto: "
        "en-mn whenever the model is quantised)",
    )


def add_batch_size_argument(parser: argparse._ActionsContainer) -> None:
    """Add ``--batch-size`` (chunks per model call)."""
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="chunks per model call (default: from free memory)",
    )


def add_max_chars_argument(parser: argparse._ActionsContainer) -> None:
    """Add ``--max-chars``, which :func:`generate_options` reads."""
    from subplug.languages import DEFAULT_MAX_CHARS

    parser.add_argument(
        "--max-chars",
        type=int,
        default=DEFAULT_MAX_CHARS,
        metavar="N",
        help=f"characters per subtitle line (default: {DEFAULT_MAX_CHARS})",
    )


def add_bottom_argument(parser: argparse._ActionsContainer, *, where: str = "") -> None:
    """Add ``--bottom``, the language shown at the bottom of bilingual subtitles;
    ``where`` ends its help's first part (" in the .ass")."""
    parser.add_argument(
        "--bottom",
        choices=["en", "mn"],
        default="mn",
        help=f"language shown at the bottom{where} (default: mn)",
    )


def backend_options(args: argparse.Namespace, **extra: Any) -> Any:
    """The :class:`~subplug.types.BackendOptions` for parsed engine arguments (the
    options a command did not add keep their defaults)."""
    from subplug.types import BackendOptions

    return BackendOptions(
        model=args.model,
        device=args.device,
        dtype=getattr(args, "dtype", "auto"),
        quantize=getattr(args, "quantize", "auto"),
        vocab=getattr(args, "vocab", "auto"),
        batch_size=getattr(args, "batch_size", None),
        merge_adapter=not getattr(args, "no_merge", False),
        threads=getattr(args, "threads", None),
        **extra,
    )


def generate_options(args: argparse.Namespace, **changes: Any) -> Any:
    """The :class:`~subplug.types.GenerateOptions` for parsed arguments of ``generate``
    (or a command that adds some of its options: the rest keep their defaults), with
    ``changes`` on top. Values are checked by :func:`subplug.engine.validate`, not here."""
    from dataclasses import fields, replace

    from subplug.types import CueOptions, GenerateOptions, StyleOptions

    defaults = GenerateOptions()
    max_chars = getattr(args, "max_chars", None)
    values: dict[str, Any] = {
        "source": args.source,
        "targets": getattr(args, "targets", defaults.targets),
        "formats": getattr(args, "formats", defaults.formats),
        "out_dir": getattr(args, "out", None),
        "overwrite": getattr(args, "overwrite", False),
        "audio_stream": getattr(args, "audio_stream", None),
        "backend": args.backend,
        "backend_options": backend_options(args),
        "cues": CueOptions(max_chars={"en": max_chars, "mn": max_chars})
        if max_chars is not None
        else defaults.cues,
        "style": StyleOptions(bottom=getattr(args, "bottom", defaults.style.bottom)),
        "max_chunk": getattr(args, "max_chunk", defaults.max_chunk),
        "resume": not getattr(args, "no_resume", False),
    }
    known = {f.name for f in fields(GenerateOptions)}
    return replace(GenerateOptions(**values), **{k: v for k, v in changes.items() if k in known})


def prepare_out_dir(out: Path | None) -> Path | None:
    """``--out``: the folder (``~`` expanded), created when missing; a file there or a
    folder that cannot be made is a clear error."""
    if out is None:
        return None
    out = out.expanduser()
    if out.exists() and not out.is_dir():
        raise SubplugError(
            "out-not-a-folder",
            f"--out {out} is a file, not a folder.",
            "Give a folder for --out (it is created when missing).",
        )
    if not out.exists():
        try:
            out.mkdir(parents=True)
        except OSError as exc:
            raise SubplugError(
                "output-not-writable",
                f"Cannot create the output folder {out}: {exc.strerror}.",
                "Choose a folder you can write to with --out.",
            ) from exc
    return out
