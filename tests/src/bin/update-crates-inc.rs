//! Regenerates meta-diffota's crates list from Cargo.lock: run after any dependency change.

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = diffota_tests::crates_inc::generate_for_workspace(&root).unwrap_or_else(|e| {
        eprintln!("update-crates-inc: {e}");
        std::process::exit(1)
    });
    let path = root.join(diffota_tests::crates_inc::INC_PATH);
    std::fs::write(&path, text).unwrap_or_else(|e| {
        eprintln!("update-crates-inc: {}: {e}", path.display());
        std::process::exit(1)
    });
    println!("wrote {}", path.display());
}
