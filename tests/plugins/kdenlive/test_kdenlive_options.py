"""The Kdenlive commands take the engine's options through the core's one options path
(:mod:`subplug.commands.arguments`): a model of another family, its backend, a text
translator and ``--trust-remote-code`` reach the job's options as they do for
``subplug generate``."""

from __future__ import annotations

import pytest
from subplug.cli import build_parser
from subplug.commands.arguments import generate_options

FAMILY_ARGS = [
    "--model",
    "mms-1b-all",
    "--source",
    "en",
    "--translator",
    "nllb-200-distilled-600m",
    "--trust-remote-code",
]


@pytest.mark.parametrize(
    "command",
    [
        ["kdenlive", "apply", "p.kdenlive"],
        ["kdenlive", "job", "a.mp4", "a.en-mn.mlt"],
        ["generate", "a.mp4"],
    ],
)
def test_another_family_reaches_the_options_as_for_generate(command: list[str]) -> None:
    parser, _ = build_parser()
    options = generate_options(parser.parse_args([*command, *FAMILY_ARGS]))
    assert options.backend == "auto" and options.source == "en"
    backend = options.backend_options
    assert backend.model == "mms-1b-all"
    assert backend.translator == "nllb-200-distilled-600m" and backend.trust_remote_code
    plain = generate_options(parser.parse_args(command)).backend_options
    assert plain.translator is None and not plain.trust_remote_code
