//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`: seeds made from real files and
//! every minimised find) through the targets, so a decoder change that breaks on any of them
//! fails a plain `cargo test`. Also keeps `fuzz/fuzz_targets/` and `TARGETS` in step.

use std::collections::BTreeSet;
use std::path::PathBuf;

use diffota_fuzz_targets::TARGETS;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

#[test]
fn every_corpus_input_passes_its_target() {
    for (name, target) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(name);
        let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("corpus entry").path())
            .collect();
        inputs.sort();
        assert!(
            inputs.len() >= 3,
            "{}: a target needs seeds, found {}",
            dir.display(),
            inputs.len()
        );
        for input in inputs {
            let bytes = std::fs::read(&input).expect("corpus file");
            let outcome = std::panic::catch_unwind(|| target(&bytes));
            assert!(outcome.is_ok(), "{name}: {} fails", input.display());
        }
    }
}

#[test]
fn every_fuzz_target_file_is_listed() {
    let files: BTreeSet<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .expect("fuzz/fuzz_targets")
        .map(|entry| {
            let path = entry.expect("entry").path();
            path.file_stem().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    let listed: BTreeSet<String> = TARGETS.iter().map(|(name, _)| name.to_string()).collect();
    assert_eq!(files, listed);
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("Cargo.toml");
    for name in &listed {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] for {name}"
        );
    }
}
