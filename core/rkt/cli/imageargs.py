"""Image lists with per-image flags, as rkt's ``fetch``, ``prepare`` and ``run`` take them.

rkt's rule (``Documentation/subcommands/run.md``): a per-image flag written after
an image applies to that image; everything else applies to the whole command.
``IMAGE -- ARGS`` passes arguments to the app, and ``---`` ends them so another
image can follow. argparse cannot express positional flags, so the command line
is first split here, then each part is parsed by an ordinary parser.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from rkt.errors import UsageError


@dataclass
class ImageArgs:
    image: str
    #: the per-image flags written after it, still unparsed
    flags: list[str] = field(default_factory=list)
    #: arguments after ``--``, for the app
    app_args: list[str] | None = None


def _takes_value(parser: argparse.ArgumentParser, option: str) -> bool:
    action = parser._option_string_actions.get(option)  # argparse has no public lookup
    if action is None:
        return False
    # rkt-style booleans take their value only in the "--flag=value" form.
    return action.nargs not in (0, "?")


def split_image_args(
    parser: argparse.ArgumentParser,
    tokens: list[str],
    per_image: set[str],
    *,
    allow_app_args: bool = False,
) -> tuple[list[str], list[ImageArgs]]:
    """Split ``tokens`` into command-level flags and images with their own flags."""
    common: list[str] = []
    images: list[ImageArgs] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if token == "--" and allow_app_args:
            if not images:
                raise UsageError('"--" must follow an image')
            end = tokens.index("---", index) if "---" in tokens[index:] else len(tokens)
            images[-1].app_args = tokens[index:end]
            index = end + 1 if end < len(tokens) else end
            continue
        if token == "---" and allow_app_args:
            continue
        if token.startswith("-") and token != "-":
            option = token.split("=", 1)[0]
            group = [token]
            if "=" not in token and _takes_value(parser, option):
                if index >= len(tokens):
                    raise UsageError(f"flag {option} needs a value")
                group.append(tokens[index])
                index += 1
            if option in per_image and images:
                images[-1].flags.extend(group)
            elif option in per_image and option == "--signature":
                raise UsageError("--signature must follow the image it applies to")
            else:
                common.extend(group)
            continue
        images.append(ImageArgs(token))
    return common, images
