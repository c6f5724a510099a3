//! Checks on the repository's layout that cargo cannot make itself.

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    /// Integration tests live in the workspace's tests/ (outside the
    /// package that runs them), so cargo does not find them by itself: each
    /// needs a `[[test]]` entry in connbal-userspace/Cargo.toml. A file
    /// without one would silently never run.
    #[test]
    fn every_integration_test_file_is_declared() {
        let root = crate::ebpf::workspace_root();
        let manifest = fs::read_to_string(root.join("connbal-userspace/Cargo.toml")).unwrap();
        let mut undeclared = Vec::new();
        for entry in fs::read_dir(root.join("tests")).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().to_string();
            if Path::new(&name).extension().is_some_and(|e| e == "rs")
                && !manifest.contains(&format!("path = \"../tests/{name}\""))
            {
                undeclared.push(name);
            }
        }
        assert!(
            undeclared.is_empty(),
            "tests/{} not declared as [[test]] in connbal-userspace/Cargo.toml, so it would never run",
            undeclared.join(", tests/")
        );
    }
}
