//! The note a run in bf16 or int8 prints where this CPU cannot run that precision's products
//! on their own instruction ([`rnn::Precision::speed_note`]): the results are the precision's,
//! the speed is not what it promises, and the user should know before timing it.

use std::io::Write;

/// Prints `note: P: ...` as one line on stderr where [`rnn::Precision::speed_note`]
/// has one (a closed stderr is ignored: the note is not the run's output).
pub fn print(precision: rnn::Precision) {
    if let Some(why) = precision.speed_note() {
        let _ = writeln!(std::io::stderr(), "note: {precision}: {why}");
    }
}
