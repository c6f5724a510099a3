//! What a person at a terminal sees, through a real terminal: tmux runs
//! connbal in a pane and capture-pane reads the screen back.

mod common;
use common::*;
use std::path::PathBuf;
use std::time::Duration;

fn bin() -> String {
    shell_quote(std::path::Path::new(env!("CARGO_BIN_EXE_connbal")))
}

fn recorded() -> String {
    shell_quote(&data("recorded/veth.pcap"))
}

const WEB_ROW: &str = "203.0.113.11     80      4    40% ████████                 10";

#[test]
fn the_table_is_the_default_on_a_terminal_with_colour() {
    if !tools_available(&["tmux"]) {
        return;
    }
    let pane = Tmux::run(&format!(
        "env -u NO_COLOR {} replay -F web {}",
        bin(),
        recorded()
    ));
    let coloured = pane.finished(true);
    let screen = pane.capture(false);
    assert!(screen.contains("client 198.51.100.10\n"), "{screen}");
    assert!(screen.contains("  web.connbal.test.  10 connections, 10 lookups, TTL 300 s\n"));
    assert!(screen.contains(WEB_ROW), "{screen}");
    assert!(screen.contains(
        "✗ resolves before every connection: 10 lookups for 10 connections, 9 of them within the TTL 300 s"
    ));
    assert!(screen.contains("✓ spread consistent with random choice"));
    // The progress bar's last line, above the report.
    assert!(
        screen.contains("replayed 31.18 KiB, 289 packets in "),
        "{screen}"
    );
    assert!(
        coloured.contains("\x1b["),
        "colours on a terminal:\n{coloured}"
    );
}

#[test]
fn no_color_turns_colours_off() {
    if !tools_available(&["tmux"]) {
        return;
    }
    let pane = Tmux::run(&format!(
        "NO_COLOR=1 {} replay -F web {}",
        bin(),
        recorded()
    ));
    let coloured = pane.finished(true);
    assert!(coloured.contains(WEB_ROW), "{coloured}");
    assert!(!coloured.contains('\x1b'), "NO_COLOR set:\n{coloured}");
}

#[test]
fn a_pipe_gets_the_originals_tsv_and_no_progress() {
    if !tools_available(&["tmux"]) {
        return;
    }
    let pane = Tmux::run(&format!("{} replay -F web {} | cat", bin(), recorded()));
    let screen = pane.finished(false);
    // tmux turns tabs into spaces to the next tab stop.
    let words: Vec<String> = screen
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert!(
        words.contains(&"198.051.100.010 203.000.113.011:80 4 10 web.connbal.test.".to_string()),
        "{screen}"
    );
    assert!(!screen.contains("client 198.51.100.10"), "{screen}");
    // Progress still goes to the terminal on stderr, as the file is regular.
    assert!(screen.contains("replayed 31.18 KiB"), "{screen}");

    // Nothing on stderr when it is not a terminal.
    let out = replay(&["-F", "web", data("recorded/veth.pcap").to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(stderr(&out), "");
    assert!(stdout(&out).starts_with("198.051.100.010\t"));
}

/// Removes its directory on drop, also when the test fails.
struct TempCapture(PathBuf);

impl Drop for TempCapture {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A capture big enough to take a while: the recorded one's records over
/// and over.
fn big_capture() -> TempCapture {
    let bytes = std::fs::read(data("recorded/veth.pcap")).unwrap();
    let records = &bytes[24..];
    let dir = std::env::temp_dir().join(format!("connbal-terminal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big.pcap");
    let mut out = Vec::with_capacity(24 + records.len() * 4000);
    out.extend_from_slice(&bytes[..24]);
    for _ in 0..4000 {
        out.extend_from_slice(records);
    }
    std::fs::write(&path, out).unwrap();
    TempCapture(path)
}

#[test]
fn a_long_replay_shows_bytes_rate_and_eta_while_it_runs() {
    if !tools_available(&["tmux"]) {
        return;
    }
    let big = big_capture();
    let pane = Tmux::run(&format!(
        "{} replay --format tsv {} > /dev/null",
        bin(),
        shell_quote(&big.0)
    ));
    let screens = pane.watch(Duration::from_mins(2), |s| s.contains("<<done>>"));
    let during: Vec<&String> = screens.iter().filter(|s| s.contains("ETA")).collect();
    let last = screens.last().unwrap();
    assert!(
        !during.is_empty(),
        "no progress line seen in {} captures; last:\n{last}",
        screens.len()
    );
    let line = during[0].lines().find(|l| l.contains("ETA")).unwrap();
    // 24 + 4000 * 31,904 bytes, in indicatif's binary units.
    assert!(line.contains(" MiB/121.72 MiB "), "{line}");
    assert!(line.contains(" packets/s, ETA "), "{line}");
    assert!(
        last.contains("replayed 121.72 MiB, 1156000 packets in "),
        "{last}"
    );

    // From a pipe there is no size to measure against: quiet.
    let piped = Tmux::run(&format!(
        "cat {} | {} replay --format tsv - > /dev/null",
        shell_quote(&big.0),
        bin()
    ));
    let screen = piped.finished(false);
    assert!(
        !screen.contains("ETA") && !screen.contains("replayed"),
        "{screen}"
    );
}
