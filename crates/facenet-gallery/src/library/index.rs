//! `library add`: walk folders, skip what is known, detect and embed the rest in batches over
//! every core, and store each batch of photos in one transaction.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use facenet::align::align;
use facenet::eval::protocol::Progress;
use facenet::image::RgbImage;
use facenet::pipeline::DetectorPool;
use sha2::{Digest, Sha256};

use super::store::{NewLibraryFace, NewPhoto};
use super::{AddReport, Library};
use crate::{GalleryError, Result};

/// Photos detected and embedded together, then stored in one transaction.
pub const BATCH: usize = 32;

/// What the detection stage made of one file.
enum Seen {
    /// Same content as a stored photo whose file is gone: it moved.
    Moved(i64, String),
    /// Same content as a stored photo still in place: a copy, not indexed twice.
    Copy,
    /// New content: the photo with its crops (embedded next).
    New(NewPhoto, Vec<RgbImage>),
    /// The file could not be read at all (it vanished, no permission): not recorded.
    Unreadable(String),
}

fn mtime(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

/// The absolute form of a path, for the store's keys.
pub fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

impl Library {
    /// Indexes every photo under `roots` (recursively): new photos are detected (on `pool`),
    /// embedded in batches and stored with their faces; known ones are skipped by path, size
    /// and time, or by content when moved; photos gone from under a root leave; then the new
    /// faces are grouped into people ([`Library::group`]). Each batch of [`BATCH`] photos is
    /// one transaction, so a run killed at any moment is continued by the next.
    pub fn add(
        &self,
        roots: &[PathBuf],
        pool: &DetectorPool,
        progress: &dyn Progress,
    ) -> Result<AddReport> {
        let started = Instant::now();
        self.check_model()?;
        let mut files = Vec::new();
        let mut prefixes = Vec::new();
        for root in roots {
            if !root.exists() {
                return Err(GalleryError::Invalid(format!(
                    "{}: no such file or folder",
                    root.display()
                )));
            }
            let abs = absolute(root);
            if abs.is_dir() {
                files.extend(facenet::files::walk_images(&abs)?);
                prefixes.push(format!("{}/", abs.display()));
            } else {
                files.push(abs.clone());
                prefixes.push(abs.display().to_string());
            }
        }
        files.sort();
        files.dedup();
        let (mut by_path, mut by_hash) = self.db.files()?;
        let mut report = AddReport {
            files: files.len(),
            ..AddReport::default()
        };
        let mut seen: HashSet<String> = HashSet::new();
        // Stat first: unchanged files cost nothing more.
        let mut todo = Vec::new();
        for f in &files {
            let key = f.display().to_string();
            let meta = match std::fs::metadata(f) {
                Ok(m) => m,
                Err(e) => {
                    report.unreadable.push((f.clone(), e.to_string()));
                    continue;
                }
            };
            seen.insert(key.clone());
            match by_path.get(&key) {
                Some(&(_, size, t)) if size == meta.len() && t == mtime(&meta) => {
                    report.unchanged += 1
                }
                known => todo.push((f.clone(), meta.len(), mtime(&meta), known.map(|k| k.0))),
            }
        }
        progress.start("photos", todo.len());
        let pipeline = self.recognizer.pipeline();
        let cfg = *pipeline.align_config();
        for chunk in todo.chunks(BATCH) {
            let results = pool.map(
                chunk,
                |det, (path, size, time, _)| {
                    let bytes = match std::fs::read(path) {
                        Ok(b) => b,
                        Err(e) => return Ok(Seen::Unreadable(e.to_string())),
                    };
                    let hash: String = Sha256::digest(&bytes)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    if let Some((id, old)) = by_hash.get(&hash) {
                        return Ok(
                            if Path::new(old).exists() && *old != path.display().to_string() {
                                Seen::Copy
                            } else {
                                Seen::Moved(*id, hash)
                            },
                        );
                    }
                    let mut photo = NewPhoto {
                        path: path.display().to_string(),
                        hash,
                        size: *size,
                        mtime: *time,
                        width: 0,
                        height: 0,
                        error: None,
                        faces: Vec::new(),
                    };
                    let img = match facenet::image::decode_rgb(&bytes, path) {
                        Ok(img) => img,
                        Err(e) => {
                            photo.error = Some(e.to_string());
                            return Ok(Seen::New(photo, Vec::new()));
                        }
                    };
                    (photo.width, photo.height) = img.dimensions();
                    let mut found = det.detect(&img)?;
                    facenet::align::order(&mut found, img.width(), img.height());
                    let mut crops = Vec::with_capacity(found.len());
                    for d in &found {
                        crops.push(align(&img, d, &cfg)?);
                        photo.faces.push(NewLibraryFace {
                            bbox: d.bbox,
                            score: d.score,
                            landmarks: d.landmarks,
                            quality: d.quality(&img).score,
                            embedding: Vec::new(),
                        });
                    }
                    Ok::<_, facenet::Error>(Seen::New(photo, crops))
                },
                &|| progress.step(1),
            );
            let mut photos = Vec::new();
            let mut crops = Vec::new();
            let mut moves = Vec::new();
            let mut moved_hashes = Vec::new();
            let mut drop = Vec::new();
            for ((path, size, time, known), r) in chunk.iter().zip(results) {
                match r? {
                    Seen::Moved(id, hash) => {
                        if let Some(old) = known.filter(|k| *k != id) {
                            drop.push(old);
                        }
                        moves.push((id, path.display().to_string(), *size, *time));
                        moved_hashes.push(hash);
                        // The same file touched (a new time, the same content) is unchanged.
                        if *known == Some(id) {
                            report.unchanged += 1;
                        } else {
                            report.moved += 1;
                        }
                    }
                    Seen::Copy => report.copies += 1,
                    Seen::Unreadable(why) => report.unreadable.push((path.clone(), why)),
                    Seen::New(photo, c) => {
                        // A changed file at a known path replaces its old record.
                        drop.extend(*known);
                        if let Some(e) = &photo.error {
                            report.unreadable.push((path.clone(), e.clone()));
                        }
                        crops.extend(c);
                        photos.push(photo);
                    }
                }
            }
            let embeddings = pipeline.embedder().embed(&crops)?;
            let mut next = embeddings.into_iter();
            for p in &mut photos {
                for f in &mut p.faces {
                    f.embedding = next.next().map(|e| e.normalized).unwrap_or_default();
                }
            }
            let ids = self.db.write_batch(&photos, &moves, &drop)?;
            report.photos += photos.len();
            report.faces += crops.len();
            for (p, id) in photos.iter().zip(ids) {
                match id {
                    Some(id) => {
                        by_hash.insert(p.hash.clone(), (id, p.path.clone()));
                        by_path.insert(p.path.clone(), (id, p.size, p.mtime));
                    }
                    // Stored by another process meanwhile: not counted here.
                    None => {
                        report.photos -= 1;
                        report.faces -= p.faces.len();
                    }
                }
            }
            for ((id, path, size, time), hash) in moves.iter().zip(moved_hashes) {
                if let Some((_, old)) = by_hash.insert(hash, (*id, path.clone())) {
                    by_path.remove(&old);
                }
                by_path.insert(path.clone(), (*id, *size, *time));
            }
        }
        // Photos under these roots that are no longer there (and not moved above) leave.
        let (by_path, _) = self.db.files()?;
        let gone: Vec<i64> = by_path
            .iter()
            .filter(|(p, _)| !seen.contains(*p))
            .filter(|(p, _)| prefixes.iter().any(|r| p.starts_with(r) || *p == r))
            .filter(|(p, _)| !Path::new(p).exists())
            .map(|(_, k)| k.0)
            .collect();
        if !gone.is_empty() {
            self.db.write_batch(&[], &[], &gone)?;
            // The removed photos' faces leave their cached thumbnails behind: delete those
            // whose face is no longer stored.
            self.drop_thumbnails(|id| match self.db.face(id) {
                Ok(_) => Ok(false),
                Err(GalleryError::NotInLibrary(_)) => Ok(true),
                Err(e) => Err(e),
            })?;
        }
        report.removed = gone.len();
        report.indexing_s = started.elapsed().as_secs_f64();
        // Grouping reads every face: skipped when no face came since the last one (a rerun
        // over an unchanged library; a run killed before grouping leaves the watermark behind,
        // so the next run groups).
        if self.db.needs_grouping()? {
            let g = self.group()?;
            report.joined = g.joined;
            report.new_people = g.new_people;
        }
        report.total_s = started.elapsed().as_secs_f64();
        Ok(report)
    }
}
