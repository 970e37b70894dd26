//! Crash safety of the CLI's SQLite gallery: `facenet enroll` killed (SIGKILL) at varying
//! moments, several processes enrolling into one file at once, and a full disk. After each,
//! the file passes `PRAGMA integrity_check`, every enrolment that reported success is there
//! whole, and none is half-written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{crash_trials as trials, jitter};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_facenet"))
}

fn crops() -> Vec<PathBuf> {
    let dir = std::env::var_os("FACENET_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
        .join("reference/crops");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (set FACENET_SHARED)", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    v.sort();
    v
}

/// `facenet enroll NAME PHOTOS... --aligned --gallery DB`, not yet waited for.
fn enroll(db: &Path, name: &str, photos: &[PathBuf]) -> std::process::Child {
    bin()
        .args(["enroll", name])
        .args(photos)
        .args(["--aligned", "--gallery"])
        .arg(db)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Faces per identity, after `PRAGMA integrity_check` passed.
fn check(db: &Path) -> BTreeMap<String, usize> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok", "{}", db.display());
    drop(conn);
    let g = facenet_gallery::SqliteGallery::open_existing(db).unwrap();
    use facenet_gallery::GalleryStore;
    g.identities().unwrap().into_iter().collect()
}

/// Each trial enrols 12 faces under a name of its own and is killed at a moment drawn over
/// the length of an uninterrupted run: enrolments that exited 0 are whole, the others are
/// whole or absent.
#[test]
fn enroll_killed_at_random_moments_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let photos: Vec<PathBuf> = crops().into_iter().cycle().take(12).collect();
    let t = Instant::now();
    let out = enroll(&db, "first", &photos).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let span = (t.elapsed().as_millis() as u64 * 12 / 10).max(50);
    let mut acked = vec!["first".to_string()];
    let mut killed = 0;
    for i in 0..trials() {
        let name = format!("k{i}");
        let mut child = enroll(&db, &name, &photos);
        std::thread::sleep(Duration::from_millis(jitter(span)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        let status = child.wait().unwrap();
        if status.success() {
            acked.push(name);
        }
    }
    let faces = check(&db);
    for (name, n) in &faces {
        assert_eq!(*n, 12, "{name} half-written");
    }
    for name in &acked {
        assert_eq!(faces.get(name), Some(&12), "{name} exited 0 but is missing");
    }
    eprintln!(
        "{} trials over {span} ms: {killed} killed, {} completed, {} stored",
        trials(),
        acked.len() - 1,
        faces.len() - 1
    );
}

/// Eight processes enrol into one file at once (WAL and a busy timeout): all succeed and
/// every face is stored.
#[test]
fn concurrent_enrolments_into_one_file_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let photos: Vec<PathBuf> = crops().into_iter().take(3).collect();
    // The first creates the file and fixes the model.
    assert!(enroll(&db, "p0", &photos).wait().unwrap().success());
    let children: Vec<_> = (1..9)
        .map(|i| enroll(&db, &format!("p{i}"), &photos))
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let faces = check(&db);
    assert_eq!(faces.len(), 9);
    assert!(faces.values().all(|&n| n == 3), "{faces:?}");
}

/// A gallery on a full file system (a 4 MiB tmpfs, filled): enrolment fails with a clear
/// error naming the gallery, and the gallery is as it was, usable once space is back.
#[test]
#[ignore = "needs root to mount a tmpfs; .ci/run runs it with `cargo test -- --ignored full_disk`"]
fn full_disk_enrolment_fails_cleanly_and_keeps_the_gallery() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "mount -t tmpfs failed (needs root)");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let db = mnt.join("g.db");
    let photos: Vec<PathBuf> = crops().into_iter().take(3).collect();
    assert!(enroll(&db, "before", &photos).wait().unwrap().success());
    // Fill what is left, then ask for a large enrolment.
    let filler = mnt.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 64 * 1024];
    use std::io::Write;
    while f.write_all(&block).is_ok() {}
    drop(f);
    let many: Vec<PathBuf> = crops().into_iter().cycle().take(200).collect();
    let out = enroll(&db, "after", &many).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("g.db") && err.contains("the disk is full"),
        "{err}"
    );
    std::fs::remove_file(&filler).unwrap();
    let faces = check(&db);
    assert_eq!(faces, BTreeMap::from([("before".to_string(), 3)]));
    assert!(enroll(&db, "again", &photos).wait().unwrap().success());
}

/// Copies the first `per` LFW photos of each of `people` into `root/person/`.
fn lfw_photos(root: &Path, people: &[&str], per: usize) {
    let lfw = crops().pop().unwrap();
    let lfw = lfw.parent().unwrap().join("../../data/lfw");
    for p in people {
        std::fs::create_dir_all(root.join(p)).unwrap();
        let mut src: Vec<PathBuf> = std::fs::read_dir(lfw.join(p))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        src.sort();
        for f in src.into_iter().take(per) {
            std::fs::copy(&f, root.join(p).join(f.file_name().unwrap())).unwrap();
        }
    }
}

fn library_add(db: &Path, photos: &Path) -> std::process::Child {
    bin()
        .args(["library", "add"])
        .arg(photos)
        .arg("--gallery")
        .arg(db)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Faces per photo path, after `PRAGMA integrity_check` passed; no photo has two faces of one
/// index, and every face with a person points at a person that exists.
fn library_check(db: &Path) -> BTreeMap<String, usize> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok", "{}", db.display());
    // Killed before the library's tables were created: nothing indexed yet.
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'library_faces'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    if tables == 0 {
        return BTreeMap::new();
    }
    let dup: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM (SELECT photo_id, idx FROM library_faces
             GROUP BY photo_id, idx HAVING COUNT(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(dup, 0, "a face stored twice");
    let orphans: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM library_faces WHERE person_id IS NOT NULL
             AND person_id NOT IN (SELECT id FROM library_people)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0);
    let mut st = conn
        .prepare(
            "SELECT p.path, COUNT(f.id) FROM library_photos p
             LEFT JOIN library_faces f ON f.photo_id = p.id GROUP BY p.id",
        )
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as usize)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// `facenet library add` killed (SIGKILL) at moments drawn over an uninterrupted run, again
/// and again into one library (a run that gets to the end starts the library over), then run
/// to the end: after every kill each photo is whole or absent, and at the end every photo is
/// there once with all its faces once, as an uninterrupted run stores them.
#[test]
fn library_add_killed_at_random_moments_continues() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    lfw_photos(
        &photos,
        &[
            "Colin_Powell",
            "George_W_Bush",
            "Tony_Blair",
            "Donald_Rumsfeld",
        ],
        16,
    );
    let whole = dir.path().join("whole.db");
    let t = Instant::now();
    let out = library_add(&whole, &photos).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let span = (t.elapsed().as_millis() as u64 * 12 / 10).max(50);
    let expected = library_check(&whole);
    assert_eq!(expected.len(), 64);
    let db = dir.path().join("killed.db");
    let (mut killed, mut completed) = (0, 0);
    for _ in 0..trials() {
        let mut child = library_add(&db, &photos);
        std::thread::sleep(Duration::from_millis(jitter(span)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        let finished = child.wait().unwrap().success();
        if db.exists() {
            let partial = library_check(&db);
            for (path, n) in &partial {
                assert_eq!(Some(n), expected.get(path), "{path} half-indexed");
            }
            // A run that got to the end has it all; start over so that the next kills fall
            // over a whole run again.
            if finished {
                assert_eq!(partial, expected);
                completed += 1;
                for ext in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
                }
            }
        }
    }
    let out = library_add(&db, &photos).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(library_check(&db), expected);
    let people = |db: &Path| -> i64 {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.query_row(
            "SELECT COUNT(*) FROM library_faces WHERE person_id IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert!(people(&db) > 0);
    eprintln!(
        "{} trials over {span} ms: {killed} killed, {completed} completed",
        trials()
    );
}

/// The first line of `facenet library people`: photos and faces in the library.
fn library_counts(gallery: &str, name: &str) -> (usize, usize) {
    let out = bin()
        .args([
            "library",
            "people",
            "--gallery",
            gallery,
            "--gallery-name",
            name,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let first: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    // "N photos (K unreadable), F faces, ..."
    (first[0].parse().unwrap(), first[4].parse().unwrap())
}

/// Two `facenet library add` processes index different folders (holding one photo in common
/// under two names) into one PostgreSQL library at once: every photo is stored once with all
/// its faces, as one SQLite run over both folders stores them, and a rerun finds nothing new.
#[test]
#[ignore = "needs PostgreSQL with pgvector (FACENET_TEST_PG); .ci/run starts one and runs `cargo test -- --ignored postgres_`"]
fn postgres_library_two_indexers_lose_nothing() {
    let url = std::env::var("FACENET_TEST_PG")
        .expect("FACENET_TEST_PG=postgres://... (.ci/run starts one)");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    lfw_photos(&a, &["Colin_Powell", "Tony_Blair"], 12);
    lfw_photos(&b, &["George_W_Bush", "Donald_Rumsfeld"], 12);
    let shared = std::fs::read_dir(a.join("Tony_Blair"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::copy(&shared, b.join("copy.jpg")).unwrap();
    // The reference: one SQLite run over both folders.
    let sqlite = dir.path().join("one.db");
    let add = |gallery: &str, name: &str, paths: &[&Path]| {
        bin()
            .args([
                "library",
                "add",
                "--gallery",
                gallery,
                "--gallery-name",
                name,
            ])
            .args(paths)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let ok = |c: std::process::Child| {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(add(sqlite.to_str().unwrap(), "default", &[&a, &b]));
    let expected = library_counts(sqlite.to_str().unwrap(), "default");
    assert_eq!(expected.0, 48, "{expected:?}");
    let name = format!("lib{}", std::process::id());
    let (first, second) = (add(&url, &name, &[&a]), add(&url, &name, &[&b]));
    ok(first);
    ok(second);
    assert_eq!(library_counts(&url, &name), expected);
    let out = bin()
        .args([
            "library",
            "add",
            "--json",
            "--gallery",
            &url,
            "--gallery-name",
            &name,
        ])
        .args([&a, &b])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["photos"], 0, "{r}");
    assert_eq!(
        r["unchanged"].as_u64().unwrap() + r["copies"].as_u64().unwrap(),
        49,
        "{r}"
    );
    assert_eq!(library_counts(&url, &name), expected);
}
