//! A photo library: every face of every photo in a collection, grouped into people, named
//! once, found by person or by face.
//!
//! - [`Library::add`] indexes folders incrementally (known photos are skipped, moved ones
//!   keep their faces, deleted ones leave) and groups the new faces
//!   ([`people::group`]): a face joins the person enough of whose faces are near it; faces of
//!   no one found a new person once [`PeopleRule::min_faces`] of them agree; a new person
//!   merges with the person whose centroid lies near theirs. The thresholds are the impostor
//!   table's at [`JOIN_FAR`], [`FOUND_FAR`] and [`MERGE_FAR`], so that two people are rarely
//!   merged.
//! - [`Library::recluster`] regroups every face the user has not vouched for, keeping names,
//!   faces the user placed, and "not this person".
//! - [`Library::name`] makes a person a gallery identity, so `identify` knows them.
//! - [`Library::find_people`] and [`Library::find_face`] find photos.
//!
//! The tables live in the gallery's SQLite file ([`store::LibraryDb`]).
//!
//! ```text
//! facenet library add ~/Pictures
//! facenet library people
//! facenet library name 3 "Ada Lovelace"
//! facenet library find --person "Ada Lovelace" --person "Ben"
//! facenet library find --face probe.jpg
//! ```

pub mod index;
pub mod people;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod store;
pub mod types;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use facenet::image::RgbImage;
use serde::Serialize;

pub use people::{ClusterScore, PeopleRule};
use store::{LibraryStore, Regrouping, SqliteLibrary};
pub use types::{LibraryFace, Person, PhotoRow};

use crate::{GalleryError, NewFace, Recognizer, Result};

/// The per-pair false accept rate of joining a person ([`PeopleRule::threshold`]): about one
/// impostor pair in 130,000 links. A library compares every face with every other, so a loose
/// link merges people. Chosen on LFW (README, *Photo library*).
pub const JOIN_FAR: f64 = 7.5e-6;

/// The per-pair false accept rate of founding a person ([`PeopleRule::found`]): founding
/// links faces transitively, so it is stricter.
pub const FOUND_FAR: f64 = 5e-6;

/// The per-pair false accept rate of merging a newly founded person with another person
/// ([`PeopleRule::merge`]): the two compared are centroids, means of two faces or more, so
/// it is stricter again. Chosen on LFW with the others.
pub const MERGE_FAR: f64 = 3e-6;

/// The thresholds (join, found, merge) when the model has no impostor table (Keras
/// FaceNet's on LFW at [`JOIN_FAR`], [`FOUND_FAR`] and [`MERGE_FAR`]).
pub const FALLBACK_THRESHOLDS: (f32, f32, f32) = (0.68, 0.655, 0.615);

/// Faces that found a new person: two faces closer than the founding threshold agree.
pub const MIN_FACES: usize = 2;

/// Faces Immich needs to form a person (its default), for the evaluation's baseline.
pub const IMMICH_MIN_FACES: usize = 3;

/// Neighbours a face needs among a person's faces to join them.
pub const VOTES: usize = 5;

/// Faces of a named person enrolled into the gallery (the best by quality).
pub const NAMED_FACES: usize = 10;

/// The source prefix of gallery faces that come from the library.
const SOURCE: &str = "library:";

/// A photo found by face.
#[derive(Debug, Clone, Serialize)]
pub struct FaceHit {
    /// The photo.
    pub path: String,
    /// Its nearest face.
    pub face: i64,
    /// L2 distance to the probe.
    pub distance: f32,
    /// That face's person.
    pub person: Option<String>,
    /// Box of that face.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

/// What [`Library::add`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AddReport {
    /// Image files under the roots.
    pub files: usize,
    /// Skipped: same path, size and time.
    pub unchanged: usize,
    /// Newly indexed photos.
    pub photos: usize,
    /// Their faces.
    pub faces: usize,
    /// Known photos found under a new path.
    pub moved: usize,
    /// Files with the content of a photo indexed under another path.
    pub copies: usize,
    /// Photos gone from under the roots, removed.
    pub removed: usize,
    /// Files that could not be read or decoded, with why.
    pub unreadable: Vec<(std::path::PathBuf, String)>,
    /// Faces that joined a person.
    pub joined: usize,
    /// People formed.
    pub new_people: usize,
    /// Seconds to index (before grouping).
    pub indexing_s: f64,
    /// Seconds in all.
    pub total_s: f64,
}

/// What a grouping pass did.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GroupReport {
    /// Faces that joined a person.
    pub joined: usize,
    /// People formed.
    pub new_people: usize,
    /// Faces with a person after the pass.
    pub assigned: usize,
    /// Faces with none.
    pub unassigned: usize,
}

/// One row of [`Library::evaluate`].
#[derive(Debug, Clone, Serialize)]
pub struct ScoredRun {
    /// What was run.
    pub run: String,
    /// Its score.
    pub score: ClusterScore,
}

/// The library store of gallery `gallery` of an open store (SQLite: its file; PostgreSQL: its
/// database, sharing its connections).
pub fn store_of(tenants: &dyn crate::Tenants, gallery: &str) -> Result<Box<dyn LibraryStore>> {
    let any = tenants.as_any();
    #[cfg(feature = "postgres")]
    if let Some(pg) = any.downcast_ref::<crate::postgres::PostgresGallery>() {
        return Ok(Box::new(postgres::PostgresLibrary::on(
            pg.open_gallery(gallery)?,
        )));
    }
    match any
        .downcast_ref::<crate::SqliteGallery>()
        .and_then(|s| s.file())
    {
        Some(file) => Ok(Box::new(SqliteLibrary::open(file, gallery)?)),
        None => Err(GalleryError::Invalid(format!(
            "{}: this store keeps no photo library (an SQLite gallery file or PostgreSQL does)",
            tenants.location()
        ))),
    }
}

/// A photo library over a recognizer's pipeline and gallery.
#[derive(Debug)]
pub struct Library {
    db: Box<dyn LibraryStore>,
    recognizer: Recognizer,
    rule: PeopleRule,
}

impl Library {
    /// Opens (creating if needed) the library of gallery `gallery` at `location`, beside that
    /// gallery (an SQLite file, or a `postgres://` URL), which `recognizer` serves (named
    /// people become its identities).
    /// The grouping thresholds come from the gallery's impostor table at [`JOIN_FAR`] and
    /// [`FOUND_FAR`].
    pub fn open(location: &str, gallery: &str, recognizer: Recognizer) -> Result<Self> {
        let db: Box<dyn LibraryStore> = {
            #[cfg(feature = "postgres")]
            if crate::postgres::is_url(location) {
                Box::new(postgres::PostgresLibrary::connect(location, gallery)?)
            } else {
                Box::new(SqliteLibrary::open(Path::new(location), gallery)?)
            }
            #[cfg(not(feature = "postgres"))]
            Box::new(SqliteLibrary::open(Path::new(location), gallery)?)
        };
        Self::new(db, recognizer)
    }

    /// A library over a store ([`store_of`]) and the recognizer of the same gallery.
    pub fn new(db: Box<dyn LibraryStore>, recognizer: Recognizer) -> Result<Self> {
        let threshold = crate::impostor_table_for(
            &recognizer.store().settings()?,
            &recognizer.model().fingerprint,
        )
        .map_or(FALLBACK_THRESHOLDS, |t| {
            (
                t.threshold_for_far(JOIN_FAR),
                t.threshold_for_far(FOUND_FAR),
                t.threshold_for_far(MERGE_FAR),
            )
        });
        Ok(Self {
            db,
            recognizer,
            rule: PeopleRule {
                threshold: threshold.0,
                found: threshold.1,
                min_quality: facenet::quality::ENROL_MIN,
                min_faces: MIN_FACES,
                votes: VOTES,
                // A centroid is steadier than one face: the founding threshold suffices.
                centroid: threshold.1,
                merge: threshold.2,
            },
        })
    }

    /// Replaces the grouping rule.
    pub fn with_rule(mut self, rule: PeopleRule) -> Self {
        self.rule = rule;
        self
    }

    /// The grouping rule.
    pub fn rule(&self) -> PeopleRule {
        self.rule
    }

    /// The store.
    pub fn db(&self) -> &dyn LibraryStore {
        self.db.as_ref()
    }

    /// Refuses embeddings of another model than the library's (recording the first).
    pub fn check_model(&self) -> Result<()> {
        let model = self.recognizer.model();
        match self.db.model()? {
            Some(have) if have != *model => Err(GalleryError::ModelMismatch {
                gallery: have.short(),
                gallery_dim: have.dim,
                given: model.short(),
                given_dim: model.dim,
            }),
            Some(_) => Ok(()),
            None => self.db.record_model(model),
        }
    }

    /// The recognizer (pipeline and gallery).
    pub fn recognizer(&self) -> &Recognizer {
        &self.recognizer
    }

    /// Groups faces that have no person ([`people::group`]), in one write transaction.
    pub fn group(&self) -> Result<GroupReport> {
        let rule = self.rule;
        let mut report = GroupReport::default();
        self.db.regroup(&mut |points, rejects| {
            let g = people::group(points, rejects, rule);
            let assigned = points.iter().filter(|p| p.person.is_some()).count()
                + g.joined.len()
                + g.new_people.iter().map(Vec::len).sum::<usize>();
            report = GroupReport {
                joined: g.joined.len(),
                new_people: g.new_people.len(),
                assigned,
                unassigned: points.len() - assigned,
            };
            Regrouping {
                set: g.joined.iter().map(|&(f, p)| (f, Some(p))).collect(),
                new_people: g.new_people,
            }
        })?;
        Ok(report)
    }

    /// Regroups every face the user has not vouched for: faces of named people and faces the
    /// user placed stay; the others are grouped anew ([`people::group`]), and each new group
    /// keeps the id of the old person it overlaps most, so that links to people survive.
    pub fn recluster(&self) -> Result<GroupReport> {
        let named: HashSet<i64> = self
            .db
            .people()?
            .into_iter()
            .filter(|p| p.name.is_some())
            .map(|p| p.id)
            .collect();
        let rule = self.rule;
        let mut report = GroupReport::default();
        let created = self.db.regroup(&mut |points, rejects| {
            let keep = |p: &people::Point| p.pinned || p.person.is_some_and(|x| named.contains(&x));
            let fresh: Vec<people::Point> = points
                .iter()
                .map(|p| people::Point {
                    person: if keep(p) { p.person } else { None },
                    ..p.clone()
                })
                .collect();
            let g = people::group(&fresh, rejects, rule);
            let old: HashMap<i64, Option<i64>> = points.iter().map(|p| (p.id, p.person)).collect();
            let mut new_label: HashMap<i64, Option<i64>> = fresh
                .iter()
                .filter(|p| !keep(p))
                .map(|p| (p.id, None))
                .collect();
            for &(f, p) in &g.joined {
                new_label.insert(f, Some(p));
            }
            // Each new group takes the old unnamed id it overlaps most (each id once).
            let mut taken: HashSet<i64> = HashSet::new();
            let mut still_new = Vec::new();
            for faces in &g.new_people {
                let mut votes: BTreeMap<i64, usize> = BTreeMap::new();
                for f in faces {
                    if let Some(Some(o)) = old.get(f)
                        && !named.contains(o)
                    {
                        *votes.entry(*o).or_default() += 1;
                    }
                }
                let best = votes
                    .into_iter()
                    .filter(|(o, _)| !taken.contains(o))
                    .max_by_key(|&(o, n)| (n, -o))
                    .map(|(o, _)| o);
                match best {
                    Some(o) => {
                        taken.insert(o);
                        for f in faces {
                            new_label.insert(*f, Some(o));
                        }
                    }
                    None => still_new.push(faces.clone()),
                }
            }
            let set: Vec<(i64, Option<i64>)> = new_label
                .into_iter()
                .filter(|(f, l)| old.get(f) != Some(l))
                .collect();
            let assigned = fresh.iter().filter(|p| p.person.is_some()).count()
                + g.joined.len()
                + g.new_people.iter().map(Vec::len).sum::<usize>();
            report = GroupReport {
                joined: g.joined.len(),
                new_people: still_new.len(),
                assigned,
                unassigned: points.len() - assigned,
            };
            Regrouping {
                set,
                new_people: still_new,
            }
        })?;
        debug_assert_eq!(created.len(), report.new_people);
        Ok(report)
    }

    /// Every person, with face and photo counts.
    pub fn people(&self) -> Result<Vec<Person>> {
        self.db.people()
    }

    /// A person by id (`12` or `#12`) or name.
    pub fn person(&self, key: &str) -> Result<Person> {
        let id = match key.strip_prefix('#').unwrap_or(key).parse::<i64>() {
            Ok(id) => Some(id),
            Err(_) => self.db.person_named(key)?,
        };
        let found = match id {
            Some(id) => self.db.people()?.into_iter().find(|p| p.id == id),
            None => None,
        };
        found.ok_or_else(|| {
            GalleryError::NotInLibrary(format!(
                "no person `{key}` in the photo library {} (people are listed by id and name)",
                self.db.location()
            ))
        })
    }

    /// A person's faces, best quality first.
    pub fn faces_of(&self, key: &str) -> Result<Vec<LibraryFace>> {
        self.db.faces_of(self.person(key)?.id)
    }

    /// Names a person (or renames them): the name is unique in the library, and the person
    /// becomes (or joins) the gallery identity of that name with their best faces.
    pub fn name(&self, key: &str, name: &str) -> Result<Person> {
        crate::check_identity_name(name)?;
        let person = self.person(key)?;
        if let Ok(other) = self.person(name)
            && other.id != person.id
            && other.name.as_deref() == Some(name)
        {
            return Err(GalleryError::NameTaken(name.to_string()));
        }
        self.db.set_name(person.id, Some(name))?;
        if let Some(old) = person.name.as_deref().filter(|o| *o != name) {
            self.unenroll(old)?;
        }
        self.sync(person.id)?;
        self.person(&person.id.to_string())
    }

    /// Merges people into the first: their faces, their "not this person" marks, and a name
    /// if the first has none. Two different names are refused.
    pub fn merge(&self, into: &str, others: &[String]) -> Result<Person> {
        let target = self.person(into)?;
        let mut sources = Vec::new();
        for o in others {
            let p = self.person(o)?;
            if p.id != target.id {
                sources.push(p);
            }
        }
        let names: HashSet<&str> = std::iter::once(&target)
            .chain(&sources)
            .filter_map(|p| p.name.as_deref())
            .collect();
        if names.len() > 1 {
            let mut names: Vec<&str> = names.into_iter().collect();
            names.sort_unstable();
            return Err(GalleryError::Invalid(format!(
                "cannot merge people with different names ({}): rename or forget one first",
                names.join(", ")
            )));
        }
        let name = names.into_iter().next().map(str::to_owned);
        let ids: Vec<i64> = sources.iter().map(|p| p.id).collect();
        self.db.merge(target.id, &ids, name.as_deref())?;
        self.sync(target.id)?;
        self.person(&target.id.to_string())
    }

    /// Moves a face to a person (`Some`), to a new person of its own (`Some("new")`), or to
    /// no one (`None`). The face stays where the user put it through every regrouping, and
    /// never goes back to the person it left.
    pub fn move_face(&self, face: i64, to: Option<&str>) -> Result<Option<Person>> {
        let f = self.db.face(face)?;
        if f.embedding.is_empty() {
            return Err(GalleryError::Invalid(format!(
                "face {face} belongs to a forgotten person"
            )));
        }
        let target = match to {
            Some("new") => Some(self.db.new_person()?),
            Some(key) => Some(self.person(key)?.id),
            None => None,
        };
        self.db
            .place_face(face, target, f.person.filter(|o| Some(*o) != target))?;
        for p in f.person.into_iter().chain(target) {
            self.sync(p)?;
        }
        target.map(|t| self.person(&t.to_string())).transpose()
    }

    /// Forgets a person: the name goes, from the gallery too, and their faces' embeddings are
    /// erased, so they never form a person again. Returns how many faces were forgotten.
    pub fn forget(&self, key: &str) -> Result<usize> {
        let p = self.person(key)?;
        let faces: Vec<i64> = self.db.faces_of(p.id)?.iter().map(|f| f.id).collect();
        let n = self.db.forget(p.id)?;
        if let Some(name) = &p.name {
            self.unenroll(name)?;
        }
        // Their face pictures go too: the cached thumbnails.
        self.drop_thumbnails(|id| Ok(faces.contains(&id)))?;
        Ok(n)
    }

    /// Deletes the cached thumbnails (named `<face id>-...`) of the faces `gone` says are gone;
    /// returns how many files were deleted. A cache folder that is not there is empty.
    pub(crate) fn drop_thumbnails(
        &self,
        mut gone: impl FnMut(i64) -> Result<bool>,
    ) -> Result<usize> {
        let dir = self.db.thumbs_dir();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(0);
        };
        let mut deleted = 0;
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.split('-').next())
                .and_then(|n| n.parse::<i64>().ok())
            else {
                continue;
            };
            if gone(id)? {
                std::fs::remove_file(e.path()).map_err(|source| GalleryError::Io {
                    path: e.path().display().to_string(),
                    source,
                })?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Photos with every one of these people in them.
    pub fn find_people(&self, keys: &[String]) -> Result<Vec<PhotoRow>> {
        if keys.is_empty() {
            return Err(GalleryError::Invalid("name at least one person".into()));
        }
        let ids = keys
            .iter()
            .map(|k| self.person(k).map(|p| p.id))
            .collect::<Result<Vec<_>>>()?;
        self.db.photos_with(&ids)
    }

    /// Photos containing the face `probe`, nearest first: each photo's nearest face within
    /// the gallery's verification threshold ([`crate::DEFAULT_VERIFY_FAR`]), at most `limit`.
    pub fn find_face(&self, probe: &[f32], limit: usize) -> Result<Vec<FaceHit>> {
        let threshold = crate::impostor_table_for(
            &self.recognizer.store().settings()?,
            &self.recognizer.model().fingerprint,
        )
        .map_or(crate::DEFAULT_THRESHOLD, |t| {
            t.threshold_for_far(crate::DEFAULT_VERIFY_FAR)
        });
        let names: HashMap<i64, String> = self
            .people()?
            .into_iter()
            .map(|p| (p.id, p.label()))
            .collect();
        let mut best: HashMap<i64, FaceHit> = HashMap::new();
        for f in self.db.all_faces()? {
            let d = people::distance2(probe, &f.embedding).max(0.0).sqrt();
            if d >= threshold {
                continue;
            }
            let better = best.get(&f.photo).is_none_or(|h| d < h.distance);
            if better {
                best.insert(
                    f.photo,
                    FaceHit {
                        path: f.path.clone(),
                        face: f.id,
                        distance: d,
                        person: f.person.and_then(|p| names.get(&p).cloned()),
                        bbox: f.bbox,
                    },
                );
            }
        }
        let mut hits: Vec<FaceHit> = best.into_values().collect();
        hits.sort_by(|a, b| a.distance.total_cmp(&b.distance).then(a.path.cmp(&b.path)));
        hits.truncate(limit);
        Ok(hits)
    }

    /// The aligned crop of a stored face, cut from its photo (a thumbnail, `size` pixels).
    pub fn thumbnail(&self, face: &LibraryFace, size: u32) -> Result<RgbImage> {
        let img = facenet::image::load_rgb(Path::new(&face.path))?;
        let cfg = facenet::align::AlignConfig {
            size,
            ..*self.recognizer.pipeline().align_config()
        };
        Ok(facenet::align::align(&img, &face.detection(), &cfg)?)
    }

    /// A photo's file and its media type (by its content), for a front to show it.
    pub fn photo_file(&self, id: i64) -> Result<(Vec<u8>, &'static str)> {
        let row = self.db.photo(id)?;
        let bytes = std::fs::read(&row.path).map_err(|source| GalleryError::Io {
            path: row.path.clone(),
            source,
        })?;
        let kind = match image::guess_format(&bytes) {
            Ok(image::ImageFormat::Png) => "image/png",
            Ok(image::ImageFormat::Jpeg) => "image/jpeg",
            Ok(image::ImageFormat::WebP) => "image/webp",
            Ok(image::ImageFormat::Gif) => "image/gif",
            Ok(image::ImageFormat::Bmp) => "image/bmp",
            Ok(image::ImageFormat::Tiff) => "image/tiff",
            _ => "application/octet-stream",
        };
        Ok((bytes, kind))
    }

    /// A face's thumbnail as JPEG ([`Library::thumbnail`]), cut once and then read from the
    /// cache beside the library's file ([`store::LibraryDb::thumbs_dir`]); a cache that cannot
    /// be written only costs the cut next time.
    pub fn thumbnail_jpeg(&self, face: i64, size: u32) -> Result<Vec<u8>> {
        let f = self.db.face(face)?;
        let dir = self.db.thumbs_dir();
        let file = dir.join(format!(
            "{face}-{}-{:.0}-{:.0}-{size}.jpg",
            f.photo, f.bbox[0], f.bbox[1]
        ));
        if let Ok(bytes) = std::fs::read(&file) {
            return Ok(bytes);
        }
        let crop = self.thumbnail(&f, size)?;
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85)
            .encode_image(&crop)
            .map_err(|e| GalleryError::Io {
                path: file.display().to_string(),
                source: std::io::Error::other(e),
            })?;
        if std::fs::create_dir_all(&dir).is_ok() {
            let _ = facenet::files::write_atomic(&file, &bytes);
        }
        Ok(bytes)
    }

    /// Scores the library's people against the truth `truth(path)` gives for the face of each
    /// photo (face 0; other faces are grouped but not scored), and beside them, on the same
    /// embeddings: a grouping from scratch in one run and in `batches` runs, `facenet
    /// cluster` (Chinese whispers) at its default threshold and at the library's two, and
    /// DBSCAN with at least [`IMMICH_MIN_FACES`] faces (Immich's rule) at the library's threshold.
    pub fn evaluate(
        &self,
        truth: impl Fn(&str) -> Option<String>,
        batches: usize,
    ) -> Result<Vec<ScoredRun>> {
        let mut faces = self.db.all_faces()?;
        faces.sort_by_key(|f| f.id);
        let scored: Vec<usize> = (0..faces.len())
            .filter(|&i| faces[i].index == 0 && truth(&faces[i].path).is_some())
            .collect();
        if scored.is_empty() {
            return Err(GalleryError::Invalid(
                "no face of the library has a true name to score against".into(),
            ));
        }
        let names: Vec<String> = scored
            .iter()
            .map(|&i| truth(&faces[i].path).unwrap_or_default())
            .collect();
        let emb: Vec<Vec<f32>> = faces.iter().map(|f| f.embedding.clone()).collect();
        let points: Vec<(i64, f32, Vec<f32>)> = faces
            .iter()
            .map(|f| (f.photo, f.quality, f.embedding.clone()))
            .collect();
        let pick = |labels: &[Option<i64>]| scored.iter().map(|&i| labels[i]).collect::<Vec<_>>();
        let from_usize = |labels: Vec<usize>| -> Vec<Option<i64>> {
            let mut size: HashMap<usize, usize> = HashMap::new();
            for l in &labels {
                *size.entry(*l).or_default() += 1;
            }
            labels
                .into_iter()
                .map(|l| (size[&l] > 1).then_some(l as i64))
                .collect()
        };
        let t = self.rule.threshold;
        let mut runs = vec![(
            "library (as stored)".to_string(),
            faces.iter().map(|f| f.person).collect::<Vec<_>>(),
        )];
        runs.push(("one run".into(), people::replay(&points, 1, self.rule)));
        runs.push((
            format!("{batches} batches"),
            people::replay(&points, batches, self.rule),
        ));
        let dt = crate::DEFAULT_THRESHOLD;
        runs.push((
            format!("facenet cluster (t = {dt})"),
            from_usize(crate::cluster::chinese_whispers(&emb, dt, 100, 1)),
        ));
        // At the library's two thresholds: the join threshold, and the founding one, where
        // its precision is about the library's (recall compared at equal precision).
        for th in [t, self.rule.found] {
            runs.push((
                format!("facenet cluster (t = {th:.3})"),
                from_usize(crate::cluster::chinese_whispers(&emb, th, 100, 1)),
            ));
        }
        runs.push((
            format!("Immich's rule: DBSCAN, min {IMMICH_MIN_FACES} (t = {t:.3})"),
            from_usize(crate::cluster::dbscan(&emb, t, IMMICH_MIN_FACES)),
        ));
        Ok(runs
            .into_iter()
            .map(|(run, labels)| ScoredRun {
                run,
                score: people::score(&pick(&labels), &names),
            })
            .collect())
    }

    /// Removes the library's faces from a gallery identity (and the identity, if left
    /// without faces).
    fn unenroll(&self, name: &str) -> Result<()> {
        let store = self.recognizer.store();
        let faces = match store.faces(Some(name)) {
            Ok(f) => f,
            Err(GalleryError::UnknownIdentity(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let total = faces.len();
        let ours: Vec<i64> = faces
            .iter()
            .filter(|f| f.source.starts_with(SOURCE))
            .map(|f| f.id)
            .collect();
        if ours.len() == total && total > 0 {
            store.remove(name)?;
        } else {
            for id in ours {
                store.remove_face(id)?;
            }
        }
        Ok(())
    }

    /// Brings a named person's gallery identity up to date: their best faces, replacing the
    /// library's earlier ones (faces enrolled otherwise stay).
    fn sync(&self, person: i64) -> Result<()> {
        let Some(p) = self.people()?.into_iter().find(|p| p.id == person) else {
            return Ok(());
        };
        let Some(name) = p.name else { return Ok(()) };
        self.unenroll(&name)?;
        let faces: Vec<NewFace> = self
            .db
            .faces_of(person)?
            .into_iter()
            .filter(|f| !f.embedding.is_empty())
            .take(NAMED_FACES)
            .map(|f| NewFace {
                embedding: f.embedding,
                source: format!("{SOURCE}{}#{}", f.path, f.index),
                bbox: Some(f.bbox),
            })
            .collect();
        if !faces.is_empty() {
            self.recognizer
                .store()
                .enroll(&name, &faces, self.recognizer.model())?;
        }
        Ok(())
    }
}
