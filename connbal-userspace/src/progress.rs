//! Progress for long replays of regular files, on stderr when it is a
//! terminal (indicatif): bytes, packets/s and an ETA. Quiet otherwise, so
//! pipes, logs and scripts see nothing new.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::Instant;

/// Updating the bar costs an atomic store and a clock read; every this many
/// packets keeps that out of the per-packet path.
pub const UPDATE_EVERY_PACKETS: u64 = 1 << 14;

pub struct Progress {
    bar: ProgressBar,
    started: Instant,
}

impl Progress {
    /// A bar for a file of `total_bytes`, drawn on stderr, which the caller
    /// has checked is a terminal.
    pub fn for_file(total_bytes: u64) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {bytes_per_sec}, {msg}, ETA {eta}",
            )
            .expect("the template is valid")
            .progress_chars("█▉▊▋▌▍▎▏ "),
        );
        Self {
            bar,
            started: Instant::now(),
        }
    }

    pub fn update(&self, bytes: u64, packets: u64) {
        self.bar.set_position(bytes);
        self.bar.set_message(packets_rate(packets, self.started));
    }

    /// Leaves a last line saying how it went, above the report.
    pub fn finish(&self, bytes: u64, packets: u64) {
        self.bar.set_style(
            ProgressStyle::with_template("replayed {bytes}, {msg}").expect("the template is valid"),
        );
        self.bar.set_position(bytes);
        self.bar.finish_with_message(format!(
            "{packets} packets in {:.2} s ({})",
            self.started.elapsed().as_secs_f64(),
            packets_rate(packets, self.started)
        ));
    }
}

fn packets_rate(packets: u64, since: Instant) -> String {
    let secs = since.elapsed().as_secs_f64();
    if secs <= 0.0 {
        return "- packets/s".to_string();
    }
    let rate = packets as f64 / secs;
    if rate >= 1e6 {
        format!("{:.2} M packets/s", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1} k packets/s", rate / 1e3)
    } else {
        format!("{rate:.0} packets/s")
    }
}
