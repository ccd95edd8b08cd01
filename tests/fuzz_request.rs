//! The `request` fuzz target, run on stable: every file of its corpus gets
//! the outcome its name states, and deterministic mutations of the corpus
//! keep every invariant the target checks.
//!
//! With a nightly toolchain, `cargo fuzz run request fuzz/corpus/request`
//! explores further.

#[path = "../fuzz/request_outcome.rs"]
mod request_outcome;

use std::path::PathBuf;

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/request");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    assert!(files.len() >= 25, "the corpus is missing files");
    files
}

#[test]
fn every_corpus_input_gets_the_outcome_its_name_states() {
    for (name, data) in corpus() {
        let expected: u16 = name[..3].parse().expect("corpus names start with a status");
        let outcome = request_outcome::check(&data)
            .unwrap_or_else(|| panic!("{name} is not an HTTP request"));
        assert_eq!(outcome.status, expected, "{name}: {outcome:?}");
        if expected == 200 && !name.contains("public") {
            assert!(outcome.principal, "{name} passed without a principal");
        }
    }
}

/// A small deterministic generator (xorshift), so every run tries the same
/// inputs and a failure replays.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }
}

fn mutate(data: &[u8], random: &mut Random) -> Vec<u8> {
    const PIECES: [&[u8]; 10] = [
        b"$ORG",
        b"$PAT",
        b"\n",
        b"authorization: Bearer ",
        b"x-api-key: ",
        b"?api-key=",
        b"&",
        b"%",
        b"\xff",
        b"x-org-id: acme\n",
    ];
    let mut out = data.to_vec();
    for _ in 0..=random.below(3) {
        let at = random.below(out.len() + 1);
        match random.below(5) {
            0 if !out.is_empty() => {
                let at = at.min(out.len() - 1);
                out[at] = random.next() as u8;
            }
            1 if !out.is_empty() => {
                let at = at.min(out.len() - 1);
                out.remove(at);
            }
            2 => out.insert(at, random.next() as u8),
            3 => {
                let piece = PIECES[random.below(PIECES.len())];
                out.splice(at..at, piece.iter().copied());
            }
            _ => {
                let end = (at + random.below(8)).min(out.len());
                let copy = out[at.min(end)..end].to_vec();
                out.splice(at..at, copy);
            }
        }
    }
    out
}

#[test]
fn mutations_of_the_corpus_keep_every_invariant() {
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let mut http_inputs = 0;
    for (_, data) in corpus() {
        for _ in 0..400 {
            let mutated = mutate(&data, &mut random);
            // `check` asserts the invariants itself; `None` means the bytes
            // are not an HTTP request at all.
            if request_outcome::check(&mutated).is_some() {
                http_inputs += 1;
            }
        }
    }
    assert!(
        http_inputs > 3_000,
        "only {http_inputs} mutations were HTTP requests"
    );
}
