//! The fuzzers' corpora and crash reproducers, replayed through the same
//! bodies the fuzz targets run (`lumen_sfu::fuzzing`): `fuzz/corpus/<target>/`
//! must exist and not be empty, `fuzz/regressions/<target>/` holds the inputs
//! that once crashed. `cargo test -p lumen-sfu --test it -- --ignored
//! write_fuzz_seeds` writes the generated seeds into the corpus directories
//! (see `fuzz/README.md`).

use std::path::{Path, PathBuf};

use lumen_sfu::fuzzing;

#[test]
fn datagrams_corpus_replays() {
    replay("datagrams");
}

#[test]
fn codec_corpus_replays() {
    replay("codec");
}

#[test]
fn offers_corpus_replays() {
    replay("offers");
}

#[test]
fn trickle_corpus_replays() {
    replay("trickle");
}

#[test]
#[ignore = "writes the generated seeds into fuzz/corpus; run by hand"]
fn write_fuzz_seeds() {
    for seed in fuzzing::seeds() {
        let dir = fuzz_dir().join("corpus").join(seed.target);
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
        std::fs::write(dir.join(&seed.name), &seed.data).expect("write a seed");
    }
}

fn replay(target: &str) {
    let corpus = files(&fuzz_dir().join("corpus").join(target));
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{target} is missing or empty: the corpus is part of the tests"
    );
    let regressions = files(&fuzz_dir().join("regressions").join(target));
    for path in corpus.iter().chain(&regressions) {
        let data = std::fs::read(path).expect("read a corpus file");
        let run = std::panic::catch_unwind(|| fuzzing::run(target, &data));
        assert!(run.is_ok(), "{target}: {} panics", path.display());
    }
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
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
