//! Report snapshots: every committed capture, plus a small generated one,
//! replayed in every output format, with and without `-a`, and the output
//! (exit status, stdout, stderr) kept in `tests/data/snapshots`.
//!
//! A refactor must leave every byte of them alone, so the check is a test
//! (tests/report_snapshots.rs) rather than a script someone has to
//! remember. A deliberate change of output re-blesses them with
//! `cargo xtask snapshots --bless` and shows up in review as a diff.

use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where the blessed snapshots live, relative to the workspace root.
pub const DIR: &str = "tests/data/snapshots";
/// The generated capture: small enough to keep the snapshots readable, big
/// enough to hold every kind of traffic the generator makes.
const GENERATED_PACKETS: u64 = 1_000;
const GENERATED_SEED: u64 = 7;

/// One way of running `connbal replay` on every input.
const VARIANTS: &[(&str, &[&str])] = &[
    ("tsv", &["--format", "tsv"]),
    ("tsv-a", &["--format", "tsv", "-a"]),
    ("json", &["--format", "json"]),
    ("json-a", &["--format", "json", "-a"]),
    ("table", &["--format", "table"]),
    ("table-a", &["--format", "table", "-a"]),
    ("events", &["--events", "--format", "tsv"]),
    ("events-a", &["--events", "--format", "tsv", "-a"]),
    ("verbose", &["-v", "--format", "tsv"]),
    ("filtered", &["-F", "web", "--format", "table"]),
];

/// The captures: every committed one, and the generated one in each of
/// its formats.
fn inputs(root: &Path, scratch: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut inputs = Vec::new();
    for dir in ["recorded", "hostile"] {
        let mut files: Vec<PathBuf> = fs::read_dir(root.join("tests/data").join(dir))
            .with_context(|| format!("reading tests/data/{dir}"))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        files.sort();
        for file in files {
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            inputs.push((format!("{dir}-{name}"), file));
        }
    }
    crate::gen::generate(scratch, GENERATED_PACKETS, GENERATED_SEED)?;
    for ext in ["pcap", "pcapng", "snoop"] {
        inputs.push((
            format!("generated-synthetic.{ext}"),
            scratch.join(format!("synthetic.{ext}")),
        ));
    }
    Ok(inputs)
}

/// Peak RSS is the one figure in a report that depends on the machine.
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        match line.find("peak_rss_kib") {
            Some(at) => {
                let (head, tail) = line.split_at(at);
                out.push_str(head);
                let digits_end = tail
                    .char_indices()
                    .skip_while(|(_, c)| !c.is_ascii_digit())
                    .find(|(_, c)| !c.is_ascii_digit())
                    .map_or(tail.len(), |(i, _)| i);
                let digits_start = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(0);
                out.push_str(&tail[..digits_start]);
                out.push('N');
                out.push_str(&tail[digits_end..]);
            }
            None => out.push_str(line),
        }
    }
    out
}

/// Every snapshot as (file name, content), in a stable order.
pub fn render(root: &Path, connbal: &Path, scratch: &Path) -> Result<Vec<(String, String)>> {
    let mut snapshots = Vec::new();
    for (input_name, path) in inputs(root, scratch)? {
        let mut content = String::new();
        for (variant, args) in VARIANTS {
            let out = Command::new(connbal)
                .arg("replay")
                .args(*args)
                .arg(&path)
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .output()
                .with_context(|| format!("running {}", connbal.display()))?;
            // Paths differ between checkouts; the name is enough.
            let shown = path.display().to_string();
            let text = |bytes: &[u8]| {
                normalise(&String::from_utf8_lossy(bytes)).replace(&shown, &input_name)
            };
            let _ = write!(
                content,
                "=== {variant}: connbal replay {} {input_name}\n--- exit {}\n--- stdout\n{}--- stderr\n{}",
                args.join(" "),
                out.status.code().map_or("signal".to_string(), |c| c.to_string()),
                text(&out.stdout),
                text(&out.stderr),
            );
        }
        snapshots.push((format!("{input_name}.txt"), content));
    }
    Ok(snapshots)
}

/// `cargo xtask snapshots [--bless]`: compare with (or overwrite) the
/// committed snapshots, using the release build.
pub fn run(root: &Path, bless: bool) -> Result<()> {
    let connbal = crate::bench::build_release(root)?;
    let scratch = root.join("target/snapshots");
    fs::create_dir_all(&scratch)?;
    let dir = root.join(DIR);
    let snapshots = render(root, &connbal, &scratch)?;
    if bless {
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        fs::create_dir_all(&dir)?;
        for (name, content) in &snapshots {
            fs::write(dir.join(name), content)?;
        }
        println!("wrote {} snapshots to {DIR}", snapshots.len());
        return Ok(());
    }
    let differing = differences(&dir, &snapshots);
    if differing.is_empty() {
        println!("all {} snapshots match {DIR}", snapshots.len());
        Ok(())
    } else {
        bail!("snapshots differ from {DIR}: {}", differing.join(", "))
    }
}

/// The snapshots that differ from the committed ones (or are missing, or
/// committed but no longer produced).
pub fn differences(dir: &Path, snapshots: &[(String, String)]) -> Vec<String> {
    let mut differing = Vec::new();
    for (name, content) in snapshots {
        if fs::read_to_string(dir.join(name)).ok().as_deref() != Some(content.as_str()) {
            differing.push(name.clone());
        }
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !snapshots.iter().any(|(n, _)| *n == name) {
                differing.push(format!("{name} (no longer produced)"));
            }
        }
    }
    differing
}

#[cfg(test)]
mod tests {
    use super::normalise;

    #[test]
    fn only_the_rss_figure_is_normalised() {
        assert_eq!(
            normalise("  \"peak_rss_kib\": 12345,\npackets: 7\npeak_rss_kib: 99\n"),
            "  \"peak_rss_kib\": N,\npackets: 7\npeak_rss_kib: N\n"
        );
    }
}
