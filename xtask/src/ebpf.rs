//! Building the eBPF object and keeping the committed copy honest.
//!
//! The object is committed (as Go projects commit bpf2go output) so that a
//! stable `cargo build` needs no nightly, rust-src or bpf-linker. Next to it
//! sits the hash of the sources it was built from; a test recomputes that
//! hash, so a change to the kernel program or the shared records that was
//! not followed by `cargo xtask build-ebpf` cannot land.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the committed object and its source hash live.
pub const OBJECT: &str = "connbal-userspace/ebpf/connbal.bpf.o";
pub const SOURCE_HASH: &str = "connbal-userspace/ebpf/connbal.bpf.o.sources.sha256";

/// The pinned nightly, written once in connbal-ebpf/rust-toolchain.toml
/// (scripts read it there too): its LLVM major version must match the one
/// bpf-linker is built against.
pub const NIGHTLY: &str = pinned_channel(include_str!("../../connbal-ebpf/rust-toolchain.toml"));

/// The `channel = "…"` value of a rust-toolchain.toml, at compile time.
const fn pinned_channel(toml: &'static str) -> &'static str {
    const KEY: &[u8] = b"channel = \"";
    let bytes = toml.as_bytes();
    let mut at = 0;
    while at + KEY.len() <= bytes.len() {
        let mut matched = 0;
        while matched < KEY.len() && bytes[at + matched] == KEY[matched] {
            matched += 1;
        }
        if matched == KEY.len() && (at == 0 || bytes[at - 1] == b'\n') {
            let (_, rest) = bytes.split_at(at + KEY.len());
            let mut end = 0;
            while end < rest.len() && rest[end] != b'"' {
                end += 1;
            }
            let (channel, _) = rest.split_at(end);
            return match std::str::from_utf8(channel) {
                Ok(channel) => channel,
                Err(_) => panic!("rust-toolchain.toml: the channel is not UTF-8"),
            };
        }
        at += 1;
    }
    panic!("connbal-ebpf/rust-toolchain.toml names no channel")
}
const LLVM_MAJOR: &str = "22";

/// Everything the object is built from.
const SOURCE_ROOTS: &[&str] = &[
    "connbal-ebpf/Cargo.toml",
    "connbal-ebpf/rust-toolchain.toml",
    "connbal-ebpf/Cargo.lock",
    "connbal-ebpf/src",
    "connbal-common/Cargo.toml",
    "connbal-common/src",
];

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

fn collect(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let path = root.join(rel);
    if path.is_dir() {
        for entry in fs::read_dir(&path).with_context(|| format!("reading {}", path.display()))? {
            collect(root, &rel.join(entry?.file_name()), out)?;
        }
    } else {
        out.push(rel.to_path_buf());
    }
    Ok(())
}

/// The files the object is built from, relative to `root`, sorted.
pub fn source_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for source in SOURCE_ROOTS {
        collect(root, Path::new(source), &mut files)?;
    }
    files.sort();
    Ok(files)
}

/// SHA-256 over the sorted source files (path, length, content each).
pub fn source_hash(root: &Path) -> Result<String> {
    let files = source_files(root)?;
    let mut hasher = Sha256::new();
    for rel in files {
        let content =
            fs::read(root.join(&rel)).with_context(|| format!("reading {}", rel.display()))?;
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update((content.len() as u64).to_le_bytes());
        hasher.update(&content);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

pub fn build() -> Result<()> {
    let root = workspace_root();
    let target_dir = root.join("target/ebpf");
    // Absolute paths into the pinned toolchain: under `cargo xtask`, PATH
    // and the environment still point at the stable toolchain that runs us.
    let cargo = toolchain_binary("cargo")?;
    let rustc = toolchain_binary("rustc")?;
    let status = Command::new(&cargo)
        .current_dir(root.join("connbal-ebpf"))
        .env_remove("RUSTUP_TOOLCHAIN")
        .env("RUSTC", &rustc)
        .env("CARGO_TARGET_DIR", &target_dir)
        // BTF for the maps and program (aya reads it); the cfg tells
        // aya-ebpf which architecture's bindings to use.
        .env(
            "RUSTFLAGS",
            r#"-C debuginfo=2 -C link-arg=--btf --cfg bpf_target_arch="x86_64""#,
        )
        .args([
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .status()
        .context("running the pinned nightly's cargo (run `cargo xtask setup` first)")?;
    if !status.success() {
        bail!("building the eBPF program failed ({status}); `cargo xtask setup` installs what it needs");
    }
    let built = target_dir.join("bpfel-unknown-none/release/connbal");
    fs::copy(&built, root.join(OBJECT)).with_context(|| format!("copying {}", built.display()))?;
    fs::write(root.join(SOURCE_HASH), format!("{}\n", source_hash(&root)?))?;
    println!("wrote {OBJECT} and {SOURCE_HASH}");
    Ok(())
}

fn toolchain_binary(name: &str) -> Result<PathBuf> {
    let out = crate::lab::run(Command::new("rustup").args(["which", name, "--toolchain", NIGHTLY]))
        .with_context(|| format!("{NIGHTLY} is not installed: run `cargo xtask setup`"))?;
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// The pinned nightly with rust-src, and a bpf-linker built against that
/// nightly's own LLVM, as checked on these machines
/// (shared/notes/ebpf-on-these-machines.md). Idempotent: it repairs the
/// LLVM links a working bpf-linker needs and only builds what is missing.
pub fn setup() -> Result<()> {
    crate::lab::run(Command::new("rustup").args([
        "toolchain",
        "install",
        NIGHTLY,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
    .with_context(|| format!("installing {NIGHTLY} with rust-src"))?;
    let sysroot =
        crate::lab::run(Command::new(toolchain_binary("rustc")?).args(["--print", "sysroot"]))?;
    let nightly_lib = PathBuf::from(String::from_utf8(sysroot.stdout)?.trim()).join("lib");
    let prefix = PathBuf::from("/opt/llvm-rust");
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib)?;
    let mut llvm = None;
    for entry in fs::read_dir(&nightly_lib)? {
        let name = entry?.file_name().to_string_lossy().to_string();
        if name.starts_with(&format!("libLLVM.so.{LLVM_MAJOR}")) {
            let link = lib.join(&name);
            let _ = fs::remove_file(&link);
            std::os::unix::fs::symlink(nightly_lib.join(&name), &link)?;
            llvm = Some(link);
        }
    }
    let llvm = llvm.with_context(|| format!("{NIGHTLY} ships no libLLVM.so.{LLVM_MAJOR}*"))?;
    let unversioned = lib.join("libLLVM.so");
    let _ = fs::remove_file(&unversioned);
    std::os::unix::fs::symlink(&llvm, &unversioned)?;
    let works = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        println!("bpf-linker works against {}", llvm.display());
        return Ok(());
    }
    crate::lab::run(
        Command::new("cargo")
            .env("LLVM_PREFIX", &prefix)
            .args([
                "install",
                "--force",
                "bpf-linker",
                "--version",
                "0.13.0",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{LLVM_MAJOR}")),
    )
    .context("building bpf-linker")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pinned_nightly_is_read_from_rust_toolchain_toml() {
        assert!(
            super::NIGHTLY.starts_with("nightly-20"),
            "{}",
            super::NIGHTLY
        );
        assert_eq!(
            super::pinned_channel(
                "[toolchain]\n# channel = \"x\"\nchannel = \"nightly-2030-01-02\"\n"
            ),
            "nightly-2030-01-02"
        );
    }
}
