//! A gallery held in memory for as long as its process runs, kept up to date with every
//! write to its store, this process's and other processes'.
//!
//! Before this, every search read the whole gallery: a service answering an identification
//! of a 100,016-face gallery spent most of its time reading rows. A [`LiveIndex`] reads the
//! gallery once, then, before each search, asks the store what changed since the generation
//! it holds ([`crate::GalleryStore::changes`]: one indexed query, no rows when nothing
//! changed) and re-reads only the identities that were touched, replacing their rows in
//! place ([`SearchIndex::replace_identity`]). Re-reading an identity is idempotent, so a write
//! that commits between the two reads is simply applied again at the next search.
//!
//! Stores that search themselves (PostgreSQL) have no live index: the database is the index.

use std::sync::{RwLock, RwLockReadGuard};

use crate::search::GalleryRule;
use crate::{AnnConfig, GalleryError, GalleryStore, Result, SearchIndex, Settings};

/// What a [`LiveIndex`] holds once loaded.
#[derive(Debug)]
pub struct LiveState {
    /// The store's generation the index reflects.
    pub generation: i64,
    /// The gallery's faces (or centroids) under the recognizer's rule.
    pub index: SearchIndex,
    /// The gallery's settings.
    pub settings: Settings,
}

/// The in-memory search index of one gallery, shared by every clone of a
/// [`crate::Recognizer`] (a service's requests, a Python object's calls).
#[derive(Debug, Default)]
pub struct LiveIndex {
    state: RwLock<Option<LiveState>>,
    /// Held while the gallery is read whole, so that the requests arriving together at a
    /// cold service read it once, not once each.
    loading: std::sync::Mutex<()>,
}

/// How a catch-up went ([`LiveIndex::refresh`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// The store's record of changes is not kept: nothing held.
    Untracked,
    /// The whole gallery was read (the first search).
    Loaded,
    /// Only these many identities were read again.
    Updated(usize),
    /// Nothing changed.
    Current,
}

impl LiveIndex {
    /// Brings the index up to date with `store` under `rule`: the first call reads the whole
    /// gallery (and attaches an HNSW graph from [`crate::ANN_MIN_FACES`] entries on, loaded
    /// from beside the store where one was saved for exactly these faces), later ones only
    /// what changed.
    pub fn refresh(&self, store: &dyn GalleryStore, rule: GalleryRule) -> Result<Refresh> {
        let mut held = self.read().as_ref().map(|s| s.generation);
        let _loading = match held {
            Some(_) => None,
            None => {
                let guard = self.loading.lock().unwrap_or_else(|p| p.into_inner());
                // Another caller may have read it while this one waited.
                held = self.read().as_ref().map(|s| s.generation);
                Some(guard)
            }
        };
        let Some(since) = held else {
            // Read the generation before the rows: a write in between is applied again later.
            let Some(changes) = store.changes(i64::MAX)? else {
                return Ok(Refresh::Untracked);
            };
            let index = read_whole(store, rule)?;
            let settings = store.settings()?;
            let mut state = self.write();
            // Another thread may have loaded it meanwhile; the later generation stays.
            if state
                .as_ref()
                .is_none_or(|s| s.generation < changes.generation)
            {
                *state = Some(LiveState {
                    generation: changes.generation,
                    index,
                    settings,
                });
            }
            return Ok(Refresh::Loaded);
        };
        let Some(changes) = store.changes(since)? else {
            return Ok(Refresh::Untracked);
        };
        if changes.generation <= since {
            return Ok(Refresh::Current);
        }
        let mut faces = Vec::with_capacity(changes.identities.len());
        for name in &changes.identities {
            faces.push(match store.faces(Some(name)) {
                Ok(f) => f,
                // Removed, or renamed away: no rows.
                Err(GalleryError::UnknownIdentity(_)) => Vec::new(),
                Err(e) => return Err(e),
            });
        }
        let settings = match changes.settings {
            true => Some(store.settings()?),
            false => None,
        };
        let mut guard = self.write();
        let state = guard
            .as_mut()
            .ok_or_else(|| GalleryError::Invalid("the live index was dropped".into()))?;
        for (name, faces) in changes.identities.iter().zip(&faces) {
            state.index.replace_identity(name, faces)?;
        }
        if let Some(s) = settings {
            state.settings = s;
        }
        state.generation = state.generation.max(changes.generation);
        Ok(Refresh::Updated(changes.identities.len()))
    }

    /// The held state (`None` before the first [`LiveIndex::refresh`]), read-locked.
    pub fn read(&self) -> RwLockReadGuard<'_, Option<LiveState>> {
        // A panic while the lock was held leaves at worst an index one update behind; the
        // next refresh applies it again.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Option<LiveState>> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the held state: the next refresh reads the gallery whole.
    pub fn clear(&self) {
        *self.write() = None;
    }
}

/// Every face of the gallery in one index under `rule`, with an HNSW graph from
/// [`crate::ANN_MIN_FACES`] entries on (loaded from beside the store where one was saved for
/// exactly these faces, else built and saved there).
pub(crate) fn read_whole(store: &dyn GalleryStore, rule: GalleryRule) -> Result<SearchIndex> {
    let mut index = SearchIndex::with_rule(&store.faces(None)?, rule)?;
    if index.len() >= crate::ANN_MIN_FACES {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        match store.ann_path() {
            Some(path) => {
                index.load_or_build_ann(&path, AnnConfig::default(), threads)?;
            }
            None => index.build_ann(AnnConfig::default(), threads)?,
        }
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store_tests::{face, model};
    use crate::{GalleryStore, SqliteGallery};

    fn unit(deg: f32) -> (f32, f32) {
        let a = deg.to_radians();
        (a.cos(), a.sin())
    }

    fn add(g: &SqliteGallery, name: &str, deg: f32) -> i64 {
        let (x, y) = unit(deg);
        g.enroll(name, &[face(x, y, &format!("{name}@{deg}"))], &model())
            .unwrap()[0]
    }

    /// The best identity for a probe at `deg`, with its distance, as the live index says.
    fn best(live: &LiveIndex, deg: f32) -> Option<(String, f32)> {
        let (x, y) = unit(deg);
        let state = live.read();
        let m = state.as_ref().unwrap().index.search(&[x, y], 1).unwrap();
        m.into_iter().next().map(|m| (m.identity, m.distance))
    }

    /// The same search on the gallery read whole, now: the live index must agree with it.
    fn fresh(g: &SqliteGallery, rule: GalleryRule, deg: f32) -> Option<(String, f32)> {
        let (x, y) = unit(deg);
        let idx = SearchIndex::with_rule(&g.faces(None).unwrap(), rule).unwrap();
        let m = idx.search(&[x, y], 1).unwrap();
        m.into_iter().next().map(|m| (m.identity, m.distance))
    }

    /// Writes through one handle of a file (another process) reach a live index held on a
    /// second handle at its next refresh, reading only the identities they touched: enrolment,
    /// a face removed, a rename, a removal, settings; under both rules, and equal to reading
    /// the gallery whole after each step.
    #[test]
    fn live_index_follows_another_process_by_what_changed() {
        for rule in [GalleryRule::Centroid, GalleryRule::NearestSample] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("g.db");
            let writer = SqliteGallery::open(&path).unwrap();
            let reader = SqliteGallery::open(&path).unwrap();
            add(&writer, "ada", 0.0);
            add(&writer, "bob", 90.0);
            let live = LiveIndex::default();
            assert_eq!(live.refresh(&reader, rule).unwrap(), Refresh::Loaded);
            assert_eq!(live.refresh(&reader, rule).unwrap(), Refresh::Current);
            let probes = [0.0, 10.0, 45.0, 80.0, 100.0, 170.0, 200.0];
            let agree = |step: &str| {
                for p in probes {
                    assert_eq!(
                        best(&live, p),
                        fresh(&reader, rule, p),
                        "{rule:?}, after {step}, probe {p}"
                    );
                }
            };
            agree("loading");

            // A new identity: one identity read.
            add(&writer, "cy", 180.0);
            assert_eq!(live.refresh(&reader, rule).unwrap(), Refresh::Updated(1));
            assert_eq!(best(&live, 175.0).unwrap().0, "cy");
            agree("an enrolment");

            // A second face of ada moves her centroid (or adds a row).
            let second = add(&writer, "ada", 30.0);
            assert_eq!(live.refresh(&reader, rule).unwrap(), Refresh::Updated(1));
            agree("a second face");

            writer.remove_face(second).unwrap();
            assert_eq!(live.refresh(&reader, rule).unwrap(), Refresh::Updated(1));
            agree("a face removed");

            // A rename touches two names: the old one leaves, the new one is found.
            writer.rename("bob", "robert").unwrap();
            assert_eq!(live.refresh(&reader, rule).unwrap(), Refresh::Updated(2));
            assert_eq!(best(&live, 90.0).unwrap().0, "robert");
            agree("a rename");

            writer.remove("cy").unwrap();
            assert_eq!(live.refresh(&reader, rule).unwrap(), Refresh::Updated(1));
            assert_ne!(best(&live, 180.0).unwrap().0, "cy");
            agree("a removal");
            // ada and robert, one face each: two entries under either rule.
            assert_eq!(live.read().as_ref().unwrap().index.len(), 2);

            // Settings: no identity read, the new settings held.
            let settings = Settings {
                target_fir: Some(0.001),
                ..Settings::default()
            };
            writer.set_settings(&settings).unwrap();
            assert_eq!(live.refresh(&reader, rule).unwrap(), Refresh::Updated(0));
            assert_eq!(live.read().as_ref().unwrap().settings, settings);

            // Writes to another gallery of the same file change nothing here.
            let other = writer.gallery("other").unwrap();
            add(&other, "zed", 0.0);
            assert_eq!(live.refresh(&reader, rule).unwrap(), Refresh::Current);
            agree("a write to another gallery");
        }
    }

    /// Many replacements of the same identities compact the matrix and keep the answers of a
    /// gallery read whole.
    #[test]
    fn churn_compacts_and_stays_exact() {
        let dir = tempfile::tempdir().unwrap();
        let g = SqliteGallery::open(&dir.path().join("g.db")).unwrap();
        for i in 0..50 {
            add(&g, &format!("p{i}"), i as f32 * 7.0);
        }
        let rule = GalleryRule::NearestSample;
        let live = LiveIndex::default();
        live.refresh(&g, rule).unwrap();
        for round in 0..60 {
            for i in 0..50 {
                if (i + round) % 3 == 0 {
                    // Identity i's faces stay within [7 i, 7 i + 3) degrees: no ties.
                    add(&g, &format!("p{i}"), i as f32 * 7.0 + round as f32 * 0.05);
                }
            }
            live.refresh(&g, rule).unwrap();
        }
        let state = live.read();
        let idx = &state.as_ref().unwrap().index;
        assert_eq!(idx.len(), g.faces(None).unwrap().len());
        // About 20,000 rows were replaced in all; compaction keeps the dead ones bounded.
        assert!(
            idx.rows() <= 2 * idx.len() + 1025,
            "{} rows for {}",
            idx.rows(),
            idx.len()
        );
        drop(state);
        for p in (0..36).map(|d| d as f32 * 10.0 + 1.3) {
            assert_eq!(best(&live, p), fresh(&g, rule, p), "probe {p}");
        }
    }

    /// Requests arriving together at a cold index read the gallery once.
    #[test]
    fn concurrent_first_searches_read_the_gallery_once() {
        let dir = tempfile::tempdir().unwrap();
        let g = SqliteGallery::open(&dir.path().join("g.db")).unwrap();
        for i in 0..20 {
            add(&g, &format!("p{i}"), i as f32 * 9.0);
        }
        let live = LiveIndex::default();
        let outcomes: Vec<Refresh> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| live.refresh(&g, GalleryRule::Centroid).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let loads = outcomes.iter().filter(|o| **o == Refresh::Loaded).count();
        assert_eq!(loads, 1, "{outcomes:?}");
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, Refresh::Loaded | Refresh::Current))
        );
    }
}
