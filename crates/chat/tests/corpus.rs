//! The `chat` fuzz target's corpus and crash reproducers, replayed through
//! the same body the fuzzer runs (`fuzz/harness/chat.rs`, pulled in with
//! `#[path]`): `fuzz/corpus/chat/` must exist and not be empty,
//! `fuzz/regressions/chat/` holds inputs that once failed (see
//! `fuzz/README.md`).

use std::path::{Path, PathBuf};

#[path = "../../../fuzz/harness/chat.rs"]
mod body;

#[test]
fn chat_corpus_replays() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let corpus = files(&fuzz.join("corpus/chat"));
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/chat is missing or empty: the corpus is part of the tests"
    );
    let regressions = files(&fuzz.join("regressions/chat"));
    for path in corpus.iter().chain(&regressions) {
        let data = std::fs::read(path).expect("read a corpus file");
        let run = std::panic::catch_unwind(|| body::run(&data));
        assert!(run.is_ok(), "chat: {} panics", path.display());
    }
}

/// The files of `dir`, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}
