//! The committed eBPF object must come from the committed sources: its
//! recorded source hash is recomputed here. A change to connbal-ebpf or
//! connbal-common without `cargo xtask build-ebpf` fails this test.

use std::path::Path;

#[test]
fn committed_ebpf_object_matches_its_sources() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let recorded =
        std::fs::read_to_string(root.join(xtask::ebpf::SOURCE_HASH)).expect("source hash file");
    let current = xtask::ebpf::source_hash(root).expect("hashing sources");
    assert_eq!(
        recorded.trim(),
        current,
        "connbal-userspace/ebpf/connbal.bpf.o is stale: run `cargo xtask build-ebpf` (after `cargo xtask setup`) and commit the result"
    );
    let object = std::fs::read(root.join(xtask::ebpf::OBJECT)).expect("object");
    assert_eq!(&object[..4], b"\x7fELF", "the object is an ELF file");
    assert_eq!(object[18], 247, "e_machine is EM_BPF");
}

#[test]
fn the_hash_covers_the_shared_record_layout() {
    // Changing connbal-common must change the hash, or the test above
    // could not catch a stale layout.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let scratch = std::env::temp_dir().join(format!("connbal-hash-{}", std::process::id()));
    for file in xtask::ebpf::source_files(root).unwrap() {
        std::fs::create_dir_all(scratch.join(&file).parent().unwrap()).unwrap();
        std::fs::copy(root.join(&file), scratch.join(&file)).unwrap();
    }
    let before = xtask::ebpf::source_hash(&scratch).unwrap();
    assert_eq!(before, xtask::ebpf::source_hash(root).unwrap());
    let lib = scratch.join("connbal-common/src/lib.rs");
    let mut text = std::fs::read_to_string(&lib).unwrap();
    text.push_str("\n// edited\n");
    std::fs::write(&lib, text).unwrap();
    assert_ne!(xtask::ebpf::source_hash(&scratch).unwrap(), before);
    let _ = std::fs::remove_dir_all(&scratch);
}
