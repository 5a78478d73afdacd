//! The `rnn` command-line tool.
fn main() {}
