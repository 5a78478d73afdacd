#!/usr/bin/env bash
# Regenerates the lessons' outputs shown in the documentation (crates/rnn/src/lessons/*.txt,
# and the timeseries plot): runs every example of crates/rnn/examples/ and keeps what it prints.
#
#   tools/lesson_outputs.sh
#
# Run it after changing an example; the docs include the examples' sources directly, so only
# the outputs need regenerating.
set -euo pipefail
cd "$(dirname "$0")/.."
out=crates/rnn/src/lessons
cargo build --release -q -p rnn --examples
for name in basics hihello charseq longseq timeseries seq2seq packed; do
    args=()
    if [ "$name" = timeseries ]; then
        args=(--plot "$out/timeseries.svg")
    fi
    echo "== $name"
    target/release/examples/"$name" "${args[@]}" > "$out/$name.txt"
done
