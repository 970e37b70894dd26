//! Test bodies every store must pass, written once over the traits: the SQLite tests run
//! them on a file and in memory, the PostgreSQL tests on a fresh database.

use std::sync::Arc;

use crate::tenants::{Role, Tenants, authenticate, create_key};
use crate::{GalleryError, GalleryStore, ModelInfo, NewFace, Settings};

pub(crate) fn model() -> ModelInfo {
    ModelInfo {
        fingerprint: "abc123".into(),
        dim: 2,
    }
}

pub(crate) fn face(x: f32, y: f32, src: &str) -> NewFace {
    NewFace {
        embedding: vec![x, y],
        source: src.into(),
        bbox: Some([1.0, 2.0, 3.0, 4.0]),
    }
}

/// Opens a new handle on the same store (another process, another service instance).
pub(crate) type Open<'a> = &'a dyn Fn() -> Arc<dyn Tenants>;

fn default(store: &dyn Tenants) -> Arc<dyn GalleryStore> {
    store.gallery(crate::DEFAULT_GALLERY).unwrap()
}

pub(crate) fn enroll_list_show_rename_remove(open: Open<'_>) {
    let g = default(open().as_ref());
    assert_eq!(g.model().unwrap(), None);
    let ids = g
        .enroll("ada", &[face(1.0, 0.0, "a.jpg")], &model())
        .unwrap();
    assert_eq!(ids.len(), 1);
    g.enroll("ada", &[face(0.8, 0.6, "b.jpg")], &model())
        .unwrap();
    g.enroll("bob", &[face(0.0, 1.0, "c.jpg")], &model())
        .unwrap();
    assert_eq!(g.model().unwrap(), Some(model()));
    assert_eq!(
        g.identities().unwrap(),
        vec![("ada".into(), 2), ("bob".into(), 1)]
    );
    let f = g.faces(Some("ada")).unwrap();
    assert_eq!(f[0].id, ids[0]);
    assert_eq!(f[1].embedding, vec![0.8, 0.6]);
    assert_eq!(f[0].bbox, Some([1.0, 2.0, 3.0, 4.0]));
    g.rename("bob", "robert").unwrap();
    assert!(matches!(
        g.rename("ada", "robert"),
        Err(GalleryError::NameTaken(_))
    ));
    assert!(matches!(
        g.faces(Some("bob")),
        Err(GalleryError::UnknownIdentity(_))
    ));
    assert_eq!(g.remove("ada").unwrap(), 2);
    assert!(matches!(
        g.remove("ada"),
        Err(GalleryError::UnknownIdentity(_))
    ));
    assert_eq!(g.faces(None).unwrap().len(), 1);
    // A cohort table of the user's own people comes back whole.
    let cohort = facenet::eval::cohort::CohortThresholds {
        fingerprint: "abc".into(),
        source: "14 labelled people".into(),
        k: 5,
        sizes: vec![10],
        targets: vec![0.1, 0.01],
        thresholds: vec![vec![-0.25, -0.375]],
        searches: vec![160],
        dir: vec![vec![[0.5, 0.75], [0.25, 0.5]]],
    };
    let s = Settings {
        threshold: Some(0.9),
        target_fir: Some(0.001),
        impostor: None,
        cohort: Some(cohort),
    };
    g.set_settings(&s).unwrap();
    assert_eq!(g.settings().unwrap(), s);
    g.set_settings(&Settings {
        cohort: None,
        ..s.clone()
    })
    .unwrap();
    assert_eq!(g.settings().unwrap().cohort, None);
    g.set_settings(&s).unwrap();
    assert!(
        g.set_settings(&Settings {
            threshold: Some(3.0),
            ..s.clone()
        })
        .is_err()
    );
    // Nothing stored is lost to a refused write.
    assert_eq!(g.settings().unwrap(), s);
}

pub(crate) fn other_model_is_refused(open: Open<'_>) {
    let g = default(open().as_ref());
    g.enroll("ada", &[face(1.0, 0.0, "a.jpg")], &model())
        .unwrap();
    let other = ModelInfo {
        fingerprint: "fff".into(),
        dim: 2,
    };
    let e = g
        .enroll("ada", &[face(1.0, 0.0, "x.jpg")], &other)
        .unwrap_err();
    assert!(matches!(e, GalleryError::ModelMismatch { .. }), "{e}");
    assert!(e.to_string().contains("abc123"));
}

pub(crate) fn failed_enrolment_writes_nothing(open: Open<'_>) {
    let g = default(open().as_ref());
    g.enroll("ada", &[face(1.0, 0.0, "a.jpg")], &model())
        .unwrap();
    // The second face has the wrong length: the whole call is refused, the new identity and
    // the first (valid) face are not written.
    let bad = NewFace {
        embedding: vec![1.0, 2.0, 3.0],
        source: "bad.jpg".into(),
        bbox: None,
    };
    assert!(
        g.enroll("carl", &[face(0.0, 1.0, "ok.jpg"), bad], &model())
            .is_err()
    );
    assert_eq!(g.identities().unwrap(), vec![("ada".into(), 1)]);
    assert!(
        g.enroll("  ", &[face(0.0, 1.0, "x.jpg")], &model())
            .is_err()
    );
}

/// Galleries of one store see nothing of each other: names, faces, settings, face ids.
pub(crate) fn galleries_are_separate(open: Open<'_>) {
    let store = open();
    let a = store.gallery("acme").unwrap();
    let b = store.gallery("globex").unwrap();
    a.enroll("ada", &[face(1.0, 0.0, "a.jpg")], &model())
        .unwrap();
    b.enroll("ada", &[face(0.0, 1.0, "b.jpg")], &model())
        .unwrap();
    b.create_identity("bob").unwrap();
    assert!(matches!(
        b.create_identity("bob"),
        Err(GalleryError::NameTaken(_))
    ));
    assert_eq!(a.identities().unwrap(), vec![("ada".into(), 1)]);
    assert_eq!(
        b.identities().unwrap(),
        vec![("ada".into(), 1), ("bob".into(), 0)]
    );
    assert!(default(store.as_ref()).identities().unwrap().is_empty());
    a.set_settings(&Settings {
        threshold: Some(0.9),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(b.settings().unwrap().threshold, None);
    // A face id of gallery A is unknown to gallery B.
    let id = a.faces(None).unwrap()[0].id;
    assert!(matches!(
        b.remove_face(id),
        Err(GalleryError::UnknownFace(_))
    ));
    assert_eq!(a.remove_face(id).unwrap().source, "a.jpg");
    assert_eq!(a.identities().unwrap(), vec![("ada".into(), 0)]);
    assert_eq!(b.faces(None).unwrap().len(), 1);
    assert!(store.gallery("../etc").is_err());
    assert_eq!(
        store.galleries().unwrap(),
        vec!["acme", "default", "globex"]
    );
}

/// Keys open their own gallery only; the secret is never stored; revocation is immediate.
pub(crate) fn keys_open_their_own_gallery_only(open: Open<'_>) {
    let store = open();
    let store = store.as_ref();
    let (a, secret_a) = create_key(store, "acme", Role::Write, "ci").unwrap();
    let (_, secret_b) = create_key(store, "globex", Role::Read, "").unwrap();
    assert!(secret_a.starts_with("fnk_") && secret_a.len() == 4 + 12 + 1 + 48);
    assert_eq!(authenticate(store, &secret_a).unwrap().unwrap(), a);
    assert_eq!(
        authenticate(store, &secret_b).unwrap().unwrap().gallery,
        "globex"
    );
    let mut wrong = secret_a.clone();
    wrong.pop();
    wrong.push(if secret_a.ends_with('0') { '1' } else { '0' });
    assert_eq!(authenticate(store, &wrong).unwrap(), None);
    assert_eq!(authenticate(store, "hello").unwrap(), None);
    assert_eq!(authenticate(store, "").unwrap(), None);
    let (_, hash) = store.key(&a.id).unwrap().unwrap();
    assert_eq!(hash, crate::tenants::key_hash(&secret_a));
    assert!(!hash.contains(&secret_a[17..]));
    assert_eq!(store.keys().unwrap().len(), 2);
    assert!(store.revoke_key(&a.id).unwrap());
    assert!(!store.revoke_key(&a.id).unwrap());
    assert_eq!(authenticate(store, &secret_a).unwrap(), None);
}

/// Several handles on one store (threads of one service, or service instances), enrolling at
/// once into one subject and into their own: nothing lost, no duplicate subject, and what one
/// handle wrote the others see at once.
pub(crate) fn concurrent_handles_lose_nothing(open: Open<'_>) {
    let handles: Vec<Arc<dyn Tenants>> = (0..2).map(|_| open()).collect();
    std::thread::scope(|s| {
        for t in 0..4 {
            let g = handles[t % 2].gallery("shared").unwrap();
            s.spawn(move || {
                for k in 0..10 {
                    let name = if k % 2 == 0 {
                        "shared0".to_string()
                    } else {
                        format!("own{t}")
                    };
                    g.enroll(&name, &[face(1.0, 0.0, &format!("{t}-{k}"))], &model())
                        .unwrap();
                    g.faces(None).unwrap();
                }
            });
        }
    });
    for h in &handles {
        let ids = h.gallery("shared").unwrap().identities().unwrap();
        assert_eq!(ids.len(), 5, "{ids:?}");
        assert!(ids.contains(&("shared0".into(), 20)), "{ids:?}");
        assert_eq!(ids.iter().map(|i| i.1).sum::<usize>(), 40);
    }
    let (a, b) = (
        handles[0].gallery("x").unwrap(),
        handles[1].gallery("x").unwrap(),
    );
    a.enroll("ada", &[face(1.0, 0.0, "a.jpg")], &model())
        .unwrap();
    assert_eq!(b.identities().unwrap(), vec![("ada".into(), 1)]);
    b.remove("ada").unwrap();
    assert!(a.identities().unwrap().is_empty());
}

/// Runs every body above, each on a fresh store from `fresh` (which returns an opener).
/// Names an attacker would try: stored and returned verbatim (never executed, never a path),
/// or refused with the reason (control characters, over the length limit); the gallery is
/// unharmed either way.
pub(crate) fn hostile_names_verbatim_or_refused(open: Open<'_>) {
    let g = default(open().as_ref());
    let verbatim = [
        "../../etc/passwd",
        "Robert'); DROP TABLE faces; --",
        "x' OR '1'='1",
        "\"quoted\" \\ back\\slash",
        "<script>alert(1)</script>",
        "%s%n%x $(id) `id`",
        "  padded  ",
        "名前 🙂 Ωmega",
        "/absolute/path.db",
    ];
    for (i, name) in verbatim.iter().enumerate() {
        g.enroll(name, &[face(i as f32, 1.0, "x.jpg")], &model())
            .unwrap();
    }
    let mut want: Vec<(String, usize)> = verbatim.iter().map(|n| (n.to_string(), 1)).collect();
    want.sort();
    assert_eq!(g.identities().unwrap(), want);
    for name in verbatim {
        assert_eq!(g.faces(Some(name)).unwrap()[0].identity, name);
    }
    g.rename("../../etc/passwd", "'; DELETE FROM identities; --")
        .unwrap();
    assert_eq!(g.identities().unwrap().len(), verbatim.len());
    let long = "a".repeat(10 * 1024);
    for (name, says) in [
        ("bell\u{7}ring", "U+0007"),
        ("two\nlines", "U+000A"),
        ("esc\u{1b}[31mred", "U+001B"),
        (long.as_str(), "bytes, longer than"),
        ("   ", "must not be empty"),
    ] {
        let e = g
            .enroll(name, &[face(0.0, 1.0, "y.jpg")], &model())
            .unwrap_err();
        assert!(
            matches!(&e, GalleryError::Invalid(m) if m.contains(says)),
            "{e}"
        );
        assert!(g.create_identity(name).is_err());
        assert!(g.rename("x' OR '1'='1", name).is_err());
    }
    assert_eq!(g.identities().unwrap().len(), verbatim.len());
}

/// Pages of the listings are slices of the whole listings, with their totals.
pub(crate) fn pages_are_slices_of_the_listings(open: Open<'_>) {
    let g = default(open().as_ref());
    for (name, n) in [("cy", 1), ("ada", 3), ("bob", 2)] {
        let faces: Vec<_> = (0..n)
            .map(|i| face(1.0, i as f32, &format!("{name}{i}.jpg")))
            .collect();
        g.enroll(name, &faces, &model()).unwrap();
    }
    g.create_identity("dan").unwrap();
    let all = g.identities().unwrap();
    assert_eq!(g.identities_page(0, 100).unwrap(), (all.clone(), 4));
    assert_eq!(g.identities_page(1, 2).unwrap(), (all[1..3].to_vec(), 4));
    assert_eq!(g.identities_page(9, 2).unwrap(), (vec![], 4));
    let faces = g.faces(None).unwrap();
    assert_eq!(g.faces_page(None, 2, 3).unwrap(), (faces[2..5].to_vec(), 6));
    let ada = g.faces(Some("ada")).unwrap();
    assert_eq!(
        g.faces_page(Some("ada"), 1, 5).unwrap(),
        (ada[1..].to_vec(), 3)
    );
    assert!(matches!(
        g.faces_page(Some("zed"), 0, 5),
        Err(crate::GalleryError::UnknownIdentity(_))
    ));
}

pub(crate) fn all(fresh: &dyn Fn() -> Box<dyn Fn() -> Arc<dyn Tenants>>) {
    type Body = fn(Open<'_>);
    let bodies: [(&str, Body); 8] = [
        (
            "pages_are_slices_of_the_listings",
            pages_are_slices_of_the_listings,
        ),
        (
            "enroll_list_show_rename_remove",
            enroll_list_show_rename_remove,
        ),
        ("other_model_is_refused", other_model_is_refused),
        (
            "failed_enrolment_writes_nothing",
            failed_enrolment_writes_nothing,
        ),
        ("galleries_are_separate", galleries_are_separate),
        (
            "keys_open_their_own_gallery_only",
            keys_open_their_own_gallery_only,
        ),
        (
            "concurrent_handles_lose_nothing",
            concurrent_handles_lose_nothing,
        ),
        (
            "hostile_names_verbatim_or_refused",
            hostile_names_verbatim_or_refused,
        ),
    ];
    for (name, body) in bodies {
        eprintln!("store test: {name}");
        let open = fresh();
        body(open.as_ref());
    }
}
