//! The replay command's contract on damaged input, signals and usage.

mod common;
use common::*;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn recorded_pcap() -> Vec<u8> {
    std::fs::read(data("recorded/veth.pcap")).unwrap()
}

fn write_temp(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("connbal-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_capture_cut_mid_record_reports_what_came_before_and_exits_2() {
    let bytes = recorded_pcap();
    let starts = pcap_record_starts(&bytes);
    // Cut inside the data of a record about two thirds in, and compare with
    // the same capture cut cleanly just before that record.
    let record = starts[starts.len() * 2 / 3];
    let clean = write_temp("clean.pcap", &bytes[..record]);
    let cut = write_temp("cut.pcap", &bytes[..record + 20]);
    let clean_out = replay(&[clean.to_str().unwrap()]);
    let cut_out = replay(&[cut.to_str().unwrap()]);
    assert!(clean_out.status.success());
    assert_eq!(cut_out.status.code(), Some(2));
    assert!(!stdout(&clean_out).is_empty(), "the prefix holds lookups");
    assert_eq!(
        stdout(&cut_out),
        stdout(&clean_out),
        "what was read before the damage is reported"
    );
    let err = stderr(&cut_out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.trim_end(), format!("connbal: {}: byte {record}: truncated pcap record data: needs {} bytes, input ends after 20", cut.display(), 16 + u32::from_le_bytes(bytes[record + 8..record + 12].try_into().unwrap())));
}

#[test]
fn an_impossible_length_in_a_real_capture_is_named_with_its_offset() {
    let mut bytes = recorded_pcap();
    let starts = pcap_record_starts(&bytes);
    let record = starts[10];
    bytes[record + 8..record + 12].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    let out = replay_stdin(&["--format", "json"], &bytes);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out).trim_end(), format!("connbal: <stdin>: byte {record}: impossible pcap captured length: 4294967280 exceeds the 262144-byte limit"));
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("JSON report still printed");
    assert_eq!(json["input"]["packets"], 10);
    assert!(json["error"].as_str().unwrap().contains("byte"));
}

#[test]
fn unknown_input_and_missing_files_exit_2_with_one_line() {
    let out = replay_stdin(&[], b"this is not a capture file at all");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "connbal: <stdin>: byte 0: not a snoop, pcap or pcapng capture (starts with 74 68 69 73)\n"
    );
    assert_eq!(stdout(&out), "");

    let out = replay(&["/nonexistent/capture.pcap"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out).lines().count(), 1);
    assert!(stderr(&out).starts_with("connbal: /nonexistent/capture.pcap: cannot open: "));
}

#[test]
fn bad_usage_exits_2() {
    let out = connbal()
        .args(["replay", "--format", "xml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_has_examples_and_exit_codes() {
    let out = connbal().args(["replay", "--help"]).output().unwrap();
    let help = stdout(&out);
    assert!(
        help.contains("Examples:") && help.contains("| connbal replay -"),
        "{help}"
    );
    assert!(help.contains("Exit status:"));
}

/// `connbal replay` reading `first` from a pipe, then SIGINT; the pipe is
/// left open for the caller.
fn replay_interrupted_after(first: &[u8]) -> (std::process::Child, std::process::ChildStdin) {
    let mut child = connbal()
        .arg("replay")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(first).unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    (child, stdin)
}

#[test]
fn sigint_on_an_idle_pipe_prints_the_report_so_far() {
    // The writer sends part of a capture, then stays open and silent, as a
    // tcpdump on a quiet interface would. SIGINT must not wait for it.
    let bytes = recorded_pcap();
    let starts = pcap_record_starts(&bytes);
    let prefix = &bytes[..starts[starts.len() / 2]];
    let expected = stdout(&replay_stdin(&[], prefix));
    assert!(!expected.is_empty());

    let (mut child, stdin) = replay_interrupted_after(prefix);
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "connbal did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), expected);
}

#[test]
fn a_second_sigint_stops_waiting_for_the_writer_and_prints() {
    // The writer keeps sending after the first Ctrl-C (a busy tcpdump
    // handing over its tail): a second Ctrl-C is the user saying "now".
    // It used to exit 130 with no report at all.
    let bytes = recorded_pcap();
    let starts = pcap_record_starts(&bytes);
    let prefix = &bytes[..starts[starts.len() / 2]];
    let (mut child, mut stdin) = replay_interrupted_after(prefix);
    // A steady trickle of the rest, so the drain has reason to wait.
    let rest = bytes[starts[starts.len() / 2]..].to_vec();
    let writer = std::thread::spawn(move || {
        for chunk in rest.chunks(64) {
            if stdin.write_all(chunk).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Stays open, as a writer that has not exited yet.
        std::thread::sleep(Duration::from_secs(5));
    });
    std::thread::sleep(Duration::from_millis(200));
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "connbal did not stop on the second SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stdout(&out).is_empty(), "the report of what was read");
    drop(writer);
}

#[test]
fn a_terminal_on_stdin_is_refused_with_a_hint() {
    // Only checkable where a terminal exists; `script` gives one.
    let Ok(out) = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("{} replay", env!("CARGO_BIN_EXE_connbal")),
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .output()
    else {
        eprintln!("skipped: `script` (util-linux) is not installed");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("standard input is a terminal"), "{text}");
}

#[test]
fn completions_are_valid_scripts_for_their_shells() {
    for shell in ["bash", "zsh", "fish"] {
        let out = connbal().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = stdout(&out);
        assert!(
            script.contains("replay") && script.contains("trace") && script.contains("ring-size"),
            "{shell}"
        );
        // Syntax-check with the shell itself where it is installed.
        let check = match shell {
            "fish" => ["fish", "--no-execute"],
            other => [other, "-n"],
        };
        let path =
            std::env::temp_dir().join(format!("connbal-completion-{}.{shell}", std::process::id()));
        std::fs::write(&path, &script).unwrap();
        match std::process::Command::new(check[0])
            .arg(check[1])
            .arg(&path)
            .output()
        {
            Ok(result) => assert!(
                result.status.success(),
                "{shell}: {}",
                String::from_utf8_lossy(&result.stderr)
            ),
            Err(_) => {
                eprintln!("skipped: {shell} is not installed to syntax-check its completions");
            }
        }
        let _ = std::fs::remove_file(&path);
    }
}

#[test]
fn the_man_page_is_roff_and_covers_every_subcommand() {
    let out = connbal().arg("man").output().unwrap();
    assert!(out.status.success());
    let page = stdout(&out);
    assert!(page.contains(".TH connbal 1"), "{page}");
    for sub in ["trace", "replay", "completions", "man"] {
        assert!(page.contains(sub), "{sub} missing from the man page");
    }
}

/// Each subcommand has its own page, connbal-COMMAND(1), as the top-level
/// page says; `man -l` renders it and it lists every option its --help
/// lists, its examples and the exit status. The top-level page explains
/// the report, the verdicts and the counters.
#[test]
fn every_man_page_renders_and_lists_every_option() {
    if !tools_available(&["man"]) {
        return;
    }
    let render = |page: Option<&str>| -> String {
        let roff = connbal().arg("man").args(page).output().unwrap();
        assert!(roff.status.success(), "{}", stderr(&roff));
        let mut man = std::process::Command::new("man")
            .args(["-l", "-"])
            .env("MANWIDTH", "200")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        man.stdin.take().unwrap().write_all(&roff.stdout).unwrap();
        let out = man.wait_with_output().unwrap();
        assert!(out.status.success(), "man -l failed: {}", stderr(&out));
        stdout(&out)
    };
    let top = render(None);
    for sub in ["trace", "replay", "completions", "man"] {
        assert!(top.contains(&format!("connbal-{sub}(1)")), "{top}");
    }
    assert!(top.contains("Counters"), "the report section: {top}");
    for sub in ["trace", "replay", "completions", "man"] {
        let page = render(Some(sub));
        assert!(page.contains(&format!("connbal-{sub}(1)")), "{page}");
        let help = stdout(&connbal().args([sub, "--help"]).output().unwrap());
        let options: Vec<&str> = help
            .split_whitespace()
            .filter(|w| w.starts_with("--") && w.len() > 2)
            .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
            .collect();
        assert!(!options.is_empty());
        for option in options {
            assert!(page.contains(option), "connbal-{sub}(1) lacks {option}");
        }
        assert!(page.contains("Examples:"), "connbal-{sub}(1) has examples");
    }
    assert!(render(Some("trace")).contains("Exit status:"));
}

#[test]
fn every_subcommand_help_has_examples() {
    for sub in ["trace", "replay", "completions", "man"] {
        let out = connbal().args([sub, "--help"]).output().unwrap();
        assert!(
            stdout(&out).contains("Examples:"),
            "{sub} --help has no examples"
        );
    }
}

/// A reader that stops early (`connbal completions bash | head -1`) ends
/// the output quietly: exit 0, no panic. The pipe's read end is closed
/// before connbal writes, so every write meets EPIPE.
#[test]
fn a_closed_stdout_is_a_quiet_end_not_a_panic() {
    for args in [&["completions", "bash"][..], &["man"][..]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = connbal()
            .args(args)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}

#[test]
fn zero_or_absurd_durations_are_refused_with_a_message() {
    for args in [
        &["trace", "--interval", "0s"][..],
        &["trace", "--duration", "0s"][..],
        &["trace", "--duration", "1000y"][..],
        &["trace", "--metrics", "9464"][..],
    ] {
        let out = connbal().args(args).stdin(Stdio::null()).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.contains(args[1]), "names the flag: {err}");
    }
}

/// `tcpdump -U -w - | connbal replay -` stopped with Ctrl-C: the terminal
/// signals both, and tcpdump writes its last packets as it exits. connbal
/// keeps reading until the pipe closes (within a bound), so they count.
/// Here the writer hands over the second half only after connbal's SIGINT.
#[test]
fn after_sigint_a_pipe_is_read_until_its_writer_closes_it() {
    let bytes = recorded_pcap();
    let starts = pcap_record_starts(&bytes);
    let half = starts[starts.len() / 2];
    let whole = stdout(&replay_stdin(&[], &bytes));
    assert_ne!(whole, stdout(&replay_stdin(&[], &bytes[..half])));

    let (child, mut stdin) = replay_interrupted_after(&bytes[..half]);
    std::thread::sleep(Duration::from_millis(200));
    stdin.write_all(&bytes[half..]).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), whole, "the tail written after SIGINT counts");
}

/// Every report says what time it covers: from the earliest packet to the
/// latest (capture timestamps need not be in order), and the table closes
/// with a one-line summary of what was seen. TSV keeps the original's lines.
#[test]
fn reports_say_the_time_span_and_close_with_a_summary() {
    let mut bytes = recorded_pcap();
    let mut starts = pcap_record_starts(&bytes);
    starts.pop(); // the file's length, not a record
    let base: u32 = 1_700_000_000; // 2023-11-14T22:13:20Z
    let last = u32::try_from(starts.len()).unwrap() - 1;
    for (i, &start) in starts.iter().enumerate() {
        let i = u32::try_from(i).unwrap();
        // The first record is stamped latest: the span is min to max.
        let (secs, micros): (u32, u32) = if i == 0 {
            (base + last + 5, 250_000)
        } else {
            (base + i, 0)
        };
        bytes[start..start + 4].copy_from_slice(&secs.to_le_bytes());
        bytes[start + 4..start + 8].copy_from_slice(&micros.to_le_bytes());
    }
    let path = write_temp("stamped.pcap", &bytes);
    let path = path.to_str().unwrap();

    let json: serde_json::Value =
        serde_json::from_str(&stdout(&replay(&["--format", "json", path]))).unwrap();
    assert_eq!(json["span"]["start"], "2023-11-14T22:13:21.000Z");
    let end = base + last + 5;
    assert_eq!(
        json["span"]["end"],
        format!(
            "2023-11-14T22:{}:{:02}.250Z",
            13 + (end - base + 20) / 60,
            (end - base + 20) % 60
        )
    );
    assert_eq!(json["span"]["duration_s"], f64::from(last + 4) + 0.25);

    let table = stdout(&replay(&["--format", "table", path]));
    let summary = table.lines().last().unwrap();
    assert_eq!(
        summary,
        format!(
            "{} packets, {} DNS answers, {} connection attempts in {} min {} s (2023-11-14T22:13:21Z to {})",
            starts.len(),
            json["counters"]["responses_matched"],
            json["counters"]["connection_attempts"],
            (last + 4) / 60,
            (last + 4) % 60,
            json["span"]["end"].as_str().unwrap().replace(".250Z", "Z"),
        )
    );

    let tsv = replay(&["--format", "tsv", path]);
    assert!(tsv.status.success());
    assert!(!stdout(&tsv).contains("packets"), "TSV rows only");
    assert_eq!(
        stderr(&tsv),
        "",
        "no summary on a stderr that is not a terminal"
    );
}

/// `--window` on a real capture whose second half comes an hour after its
/// first: each service's verdicts judge exactly the connections of the
/// second half (the whole run's minus the first half's alone), while its
/// counts stay those of the whole run.
#[test]
fn a_window_judges_the_capture_after_an_hours_pause_and_counts_it_all() {
    let mut bytes = recorded_pcap();
    let starts = pcap_record_starts(&bytes);
    let record = starts[starts.len() / 2];
    let first_half = write_temp("first-half.pcap", &bytes[..record]);
    let end = bytes.len();
    for &start in starts.iter().filter(|&&s| s >= record && s < end) {
        let secs = u32::from_le_bytes(bytes[start..start + 4].try_into().unwrap());
        bytes[start..start + 4].copy_from_slice(&(secs + 3600).to_le_bytes());
    }
    let paused = write_temp("paused.pcap", &bytes);
    let json = |args: &[&str]| -> serde_json::Value {
        let out = replay(args);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let paused = paused.to_str().unwrap();
    let whole = json(&["--format", "json", paused]);
    let windowed = json(&["--format", "json", "--window", "10m", paused]);
    let before = json(&["--format", "json", first_half.to_str().unwrap()]);
    assert!(whole.get("window").is_none());
    assert_eq!(windowed["window"]["width_s"], 600.0);
    assert_eq!(windowed["rows"], whole["rows"], "counts since the start");
    let connections = |report: &serde_json::Value, client: &str, name: &str| {
        report["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["client"] == client && s["name"] == name)
            .map_or(0, |s| s["connections"].as_u64().unwrap())
    };
    let mut judged_after = 0;
    for service in windowed["services"].as_array().unwrap() {
        let (client, name) = (
            service["client"].as_str().unwrap(),
            service["name"].as_str().unwrap(),
        );
        assert_eq!(
            service["connections"].as_u64().unwrap(),
            connections(&whole, client, name)
        );
        let after = connections(&whole, client, name) - connections(&before, client, name);
        assert_eq!(service["window"]["connections"], after, "{service}");
        judged_after += after;
    }
    assert!(judged_after > 0, "the second half has connections");
}
