//! Every report connbal prints for the committed captures and a generated
//! one, in every format and with `-a`, equals the blessed snapshot in
//! tests/data/snapshots byte for byte (peak RSS aside). Restructuring the
//! code must not change a byte; a deliberate change of output is blessed
//! with `cargo xtask snapshots --bless` and reviewed as a diff.

use std::path::Path;

#[test]
fn reports_equal_the_blessed_snapshots() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let scratch = std::env::temp_dir().join(format!("connbal-snapshots-{}", std::process::id()));
    let snapshots =
        xtask::snapshots::render(&root, Path::new(env!("CARGO_BIN_EXE_connbal")), &scratch)
            .expect("render the snapshots");
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(snapshots.len() > 30, "every capture is covered");
    let dir = root.join(xtask::snapshots::DIR);
    let differing = xtask::snapshots::differences(&dir, &snapshots);
    if !differing.is_empty() {
        // Show the first difference in full, so the failure explains itself.
        let (name, content) = snapshots
            .iter()
            .find(|(n, _)| differing.iter().any(|d| d == n))
            .expect("a produced snapshot differs");
        let blessed = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        let first = blessed
            .lines()
            .zip(content.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(blessed.lines().count().min(content.lines().count()));
        panic!(
            "{} snapshot(s) differ: {}\nfirst difference in {name} at line {}:\n  blessed: {:?}\n  now:     {:?}\n(`cargo xtask snapshots --bless` after a deliberate change of output)",
            differing.len(),
            differing.join(", "),
            first + 1,
            blessed.lines().nth(first),
            content.lines().nth(first),
        );
    }
}
