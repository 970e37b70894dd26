//! Replays every kept fuzz input through its target: the seeds (`fuzz/seeds/<target>`), every
//! input a fuzzing campaign found to crash, hang or over-allocate (`fuzz/regressions/<target>`,
//! fixed since), and the truncations of each seed at a spread of lengths. A target that panics
//! fails this test with the file's name.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Runs `target` on `data`; a panic becomes an error naming `what`.
fn replay(
    name: &str,
    target: facenet_fuzz::Target,
    what: &str,
    data: &[u8],
) -> Result<bool, String> {
    catch_unwind(AssertUnwindSafe(|| target(data))).map_err(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("{name}: {what} ({} bytes) panicked: {msg}", data.len())
    })
}

#[test]
fn every_kept_input_is_refused_or_accepted_cleanly() {
    let mut failures = Vec::new();
    let mut runs = 0usize;
    for &(name, target) in facenet_fuzz::TARGETS {
        let mut seeds = files(&fuzz_dir().join("seeds").join(name));
        assert!(!seeds.is_empty(), "fuzz/seeds/{name} has no seed");
        if name == "mtcnn_pt" {
            // The fetched MTCNN stages too, where `facenet fetch` has run (weights stay out
            // of the repository).
            let dir = facenet::paths::cache_dir().join("mtcnn");
            seeds.extend(
                files(&dir)
                    .into_iter()
                    .filter(|p| p.extension().is_some_and(|e| e == "pt")),
            );
        }
        for path in &seeds {
            let data = std::fs::read(path).unwrap();
            let what = path.display().to_string();
            runs += 1;
            match replay(name, target, &what, &data) {
                Ok(true) => {}
                Ok(false) => failures.push(format!("{name}: seed {what} does not parse")),
                Err(e) => failures.push(e),
            }
        }
        let found = files(&fuzz_dir().join("regressions").join(name));
        for path in &found {
            let data = std::fs::read(path).unwrap();
            let what = path.display().to_string();
            runs += 1;
            if let Err(e) = replay(name, target, &what, &data) {
                failures.push(e);
            }
        }
        // Truncations and a flipped byte of each seed: the cheap part of what the fuzzer does.
        for path in &seeds {
            let data = std::fs::read(path).unwrap();
            let n = data.len();
            for cut in [0, 1, 8, 64, n / 4, n / 2, n.saturating_sub(1)] {
                let cut = cut.min(n);
                runs += 1;
                let what = format!("{} cut to {cut} bytes", path.display());
                if let Err(e) = replay(name, target, &what, &data[..cut]) {
                    failures.push(e);
                }
            }
            for at in [n / 3, n / 2, 2 * n / 3] {
                if at < n {
                    let mut d = data.clone();
                    d[at] ^= 0xff;
                    runs += 1;
                    let what = format!("{} with byte {at} flipped", path.display());
                    if let Err(e) = replay(name, target, &what, &d) {
                        failures.push(e);
                    }
                }
            }
        }
    }
    // And what parses is told apart from what does not (the seeds' check above means
    // something): bytes that are no such file are refused by every target.
    for &(name, target) in facenet_fuzz::TARGETS {
        match replay(name, target, "garbage", b"garbage, not a file of any kind") {
            Ok(false) => {}
            Ok(true) => failures.push(format!("{name}: garbage parsed")),
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} inputs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
