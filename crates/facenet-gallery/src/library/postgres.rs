//! The photo library in PostgreSQL, beside the gallery's subjects (migration
//! `003_library.sql`): several machines index into one library. Photos are unique per gallery
//! by path and by content, so two indexers never store one photo twice; grouping takes a
//! transaction-scoped advisory lock per gallery, so two never form one person twice.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use tokio_postgres::Row;

use super::people::Point;
use super::store::{GroupFn, Known, LibraryStore, NewPhoto, Regrouping};
use super::types::{LibraryFace, Person, PhotoRow};
use crate::postgres::{Failure, PostgresGallery};
use crate::{GalleryError, ModelInfo, Result};

/// The advisory lock key of a gallery's library (apart from the migrations' key).
fn lock_key(gallery: i64) -> i64 {
    0x4c49_4200_0000_0000 + gallery
}

/// A gallery's photo library in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresLibrary {
    db: PostgresGallery,
}

const FACE_COLUMNS: &str = "f.id, f.photo_id, p.path, f.idx, f.x1, f.y1, f.x2, f.y2, f.score,
    f.landmarks, f.quality, f.embedding, f.person_id, f.pinned";

fn face_row(r: &Row) -> LibraryFace {
    let lm: Vec<f32> = r.get(9);
    let mut landmarks = [[0f32; 2]; 5];
    for (k, v) in lm.chunks_exact(2).take(5).enumerate() {
        landmarks[k] = [v[0], v[1]];
    }
    LibraryFace {
        id: r.get(0),
        photo: r.get(1),
        path: r.get(2),
        index: r.get::<_, i32>(3) as usize,
        bbox: [r.get(4), r.get(5), r.get(6), r.get(7)],
        score: r.get(8),
        landmarks,
        quality: r.get(10),
        embedding: r.get::<_, Option<Vec<f32>>>(11).unwrap_or_default(),
        person: r.get(12),
        pinned: r.get(13),
    }
}

fn photo_row(r: &Row) -> PhotoRow {
    PhotoRow {
        id: r.get(0),
        path: r.get(1),
        width: r.get::<_, i32>(2) as u32,
        height: r.get::<_, i32>(3) as u32,
    }
}

impl PostgresLibrary {
    /// Connects to the database at `url` (applying the migrations) and opens the library of
    /// gallery `gallery`.
    pub fn connect(url: &str, gallery: &str) -> Result<Self> {
        let db = PostgresGallery::connect(url)?.open_gallery(gallery)?;
        Ok(Self { db })
    }

    /// The library of an open gallery (sharing its connections).
    pub fn on(db: PostgresGallery) -> Self {
        Self { db }
    }

    fn g(&self) -> i64 {
        self.db.id()
    }

    fn faces_where(&self, clause: &'static str, arg: Option<i64>) -> Result<Vec<LibraryFace>> {
        let g = self.g();
        self.db.run(|c| async move {
            let sql = format!(
                "SELECT {FACE_COLUMNS} FROM library_faces f JOIN library_photos p ON p.id = f.photo_id
                 WHERE p.gallery_id = $1 AND {clause} ORDER BY f.quality DESC, f.id"
            );
            let rows = match arg {
                Some(a) => c.query(&sql, &[&g, &a]).await?,
                None => c.query(&sql, &[&g]).await?,
            };
            Ok(rows.iter().map(face_row).collect())
        })
    }
}

impl LibraryStore for PostgresLibrary {
    fn location(&self) -> String {
        use crate::GalleryStore;
        self.db.location()
    }

    fn thumbs_dir(&self) -> PathBuf {
        // A database has no folder of its own: the user's cache, one folder per database
        // and gallery.
        let key: String = self
            .location()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
            })
            .to_string();
        facenet::paths::cache_dir()
            .join("thumbs")
            .join(format!("{key}-{}", self.g()))
    }

    fn model(&self) -> Result<Option<ModelInfo>> {
        let g = self.g();
        let location = self.location();
        let v: Option<String> = self.db.run(|c| async move {
            Ok(c.query_opt(
                "SELECT value FROM library_meta WHERE gallery_id = $1 AND key = 'model'",
                &[&g],
            )
            .await?
            .map(|r| r.get(0)))
        })?;
        v.map(|s| {
            serde_json::from_str(&s).map_err(|e| GalleryError::Corrupt {
                path: location.clone(),
                reason: format!("library_meta.model: {e}"),
            })
        })
        .transpose()
    }

    fn record_model(&self, model: &ModelInfo) -> Result<()> {
        let g = self.g();
        let json = serde_json::to_string(model).expect("ModelInfo serializes");
        self.db.run(|c| async move {
            c.execute(
                "INSERT INTO library_meta(gallery_id, key, value) VALUES ($1, 'model', $2)
                 ON CONFLICT DO NOTHING",
                &[&g, &json],
            )
            .await?;
            Ok(())
        })
    }

    #[allow(clippy::type_complexity)]
    fn files(&self) -> Result<(HashMap<String, Known>, HashMap<String, (i64, String)>)> {
        let g = self.g();
        self.db.run(|c| async move {
            let rows = c
                .query(
                    "SELECT id, path, hash, size, mtime FROM library_photos WHERE gallery_id = $1",
                    &[&g],
                )
                .await?;
            let (mut by_path, mut by_hash) = (HashMap::new(), HashMap::new());
            for r in rows {
                let (id, path, hash): (i64, String, String) = (r.get(0), r.get(1), r.get(2));
                by_path.insert(path.clone(), (id, r.get::<_, i64>(3) as u64, r.get(4)));
                by_hash.insert(hash, (id, path));
            }
            Ok((by_path, by_hash))
        })
    }

    fn write_batch(
        &self,
        photos: &[NewPhoto],
        moves: &[(i64, String, u64, i64)],
        drop: &[i64],
    ) -> Result<Vec<Option<i64>>> {
        let g = self.g();
        self.db.run(|mut c| async move {
            let tx = c.transaction().await?;
            for id in drop {
                tx.execute(
                    "DELETE FROM library_photos WHERE id = $1 AND gallery_id = $2",
                    &[id, &g],
                )
                .await?;
            }
            for (id, path, size, mtime) in moves {
                tx.execute(
                    "UPDATE library_photos SET path = $2, size = $3, mtime = $4
                     WHERE id = $1 AND gallery_id = $5",
                    &[id, path, &(*size as i64), mtime, &g],
                )
                .await?;
            }
            let ph = tx
                .prepare(
                    "INSERT INTO library_photos(gallery_id, path, hash, size, mtime, width, height, added, error)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING RETURNING id",
                )
                .await?;
            let fa = tx
                .prepare(
                    "INSERT INTO library_faces(photo_id, idx, x1, y1, x2, y2, score, landmarks, quality, embedding)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .await?;
            let now = crate::now();
            let mut ids = Vec::with_capacity(photos.len());
            for p in photos {
                let row = tx
                    .query_opt(
                        &ph,
                        &[
                            &g,
                            &p.path,
                            &p.hash,
                            &(p.size as i64),
                            &p.mtime,
                            &(p.width as i32),
                            &(p.height as i32),
                            &now,
                            &p.error,
                        ],
                    )
                    .await?;
                let Some(row) = row else {
                    ids.push(None);
                    continue;
                };
                let id: i64 = row.get(0);
                ids.push(Some(id));
                for (k, f) in p.faces.iter().enumerate() {
                    let lm: Vec<f32> = f.landmarks.iter().flatten().copied().collect();
                    tx.execute(
                        &fa,
                        &[
                            &id,
                            &(k as i32),
                            &f.bbox[0],
                            &f.bbox[1],
                            &f.bbox[2],
                            &f.bbox[3],
                            &f.score,
                            &lm,
                            &f.quality,
                            &f.embedding,
                        ],
                    )
                    .await?;
                }
            }
            tx.commit().await?;
            Ok(ids)
        })
    }

    fn regroup(&self, f: &mut GroupFn<'_>) -> Result<Vec<i64>> {
        let g = self.g();
        self.db.run(|mut c| async move {
            let tx = c.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(g)])
                .await?;
            let points: Vec<Point> = tx
                .query(
                    "SELECT f.id, f.person_id, f.pinned, f.embedding, f.photo_id, f.quality
                     FROM library_faces f JOIN library_photos p ON p.id = f.photo_id
                     WHERE p.gallery_id = $1 AND f.embedding IS NOT NULL ORDER BY f.id",
                    &[&g],
                )
                .await?
                .iter()
                .map(|r| Point {
                    id: r.get(0),
                    person: r.get(1),
                    pinned: r.get(2),
                    embedding: r.get(3),
                    photo: r.get(4),
                    quality: r.get(5),
                })
                .collect();
            let rejects: HashSet<(i64, i64)> = tx
                .query(
                    "SELECT r.face_id, r.person_id FROM library_rejects r
                     JOIN library_people p ON p.id = r.person_id WHERE p.gallery_id = $1",
                    &[&g],
                )
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let Regrouping { set, new_people } = f(&points, &rejects);
            let up = tx
                .prepare("UPDATE library_faces SET person_id = $2 WHERE id = $1")
                .await?;
            for (face, person) in &set {
                tx.execute(&up, &[face, person]).await?;
            }
            let now = crate::now();
            let mut created = Vec::new();
            for faces in &new_people {
                let id: i64 = tx
                    .query_one(
                        "INSERT INTO library_people(gallery_id, created) VALUES ($1, $2) RETURNING id",
                        &[&g, &now],
                    )
                    .await?
                    .get(0);
                created.push(id);
                for f in faces {
                    tx.execute(&up, &[f, &Some(id)]).await?;
                }
            }
            delete_empty(&tx, g).await?;
            let seen = points.iter().map(|p| p.id).max().unwrap_or(0);
            tx.execute(
                "INSERT INTO library_meta(gallery_id, key, value) VALUES ($1, 'grouped', $2)
                 ON CONFLICT (gallery_id, key) DO UPDATE SET value = EXCLUDED.value",
                &[&g, &seen.to_string()],
            )
            .await?;
            tx.commit().await?;
            Ok(created)
        })
    }

    fn needs_grouping(&self) -> Result<bool> {
        let g = self.g();
        self.db.run(|c| async move {
            Ok(c.query_one(
                "SELECT COALESCE((SELECT MAX(f.id) FROM library_faces f
                                  JOIN library_photos p ON p.id = f.photo_id
                                  WHERE p.gallery_id = $1), 0) >
                        COALESCE((SELECT value::bigint FROM library_meta
                                  WHERE gallery_id = $1 AND key = 'grouped'), 0)",
                &[&g],
            )
            .await?
            .get(0))
        })
    }

    fn people(&self) -> Result<Vec<Person>> {
        let g = self.g();
        self.db.run(|c| async move {
            let rows = c
                .query(
                    "SELECT p.id, p.name, COUNT(f.id), COUNT(DISTINCT f.photo_id),
                        (SELECT c.id FROM library_faces c WHERE c.person_id = p.id
                         ORDER BY c.quality DESC, c.id LIMIT 1)
                     FROM library_people p LEFT JOIN library_faces f ON f.person_id = p.id
                     WHERE p.gallery_id = $1
                     GROUP BY p.id
                     ORDER BY p.name IS NULL, COUNT(f.id) DESC, p.id",
                    &[&g],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| Person {
                    id: r.get(0),
                    name: r.get(1),
                    faces: r.get::<_, i64>(2) as usize,
                    photos: r.get::<_, i64>(3) as usize,
                    cover: r.get(4),
                })
                .collect())
        })
    }

    fn person_named(&self, name: &str) -> Result<Option<i64>> {
        let g = self.g();
        self.db.run(|c| async move {
            Ok(c.query_opt(
                "SELECT id FROM library_people WHERE gallery_id = $1 AND name = $2",
                &[&g, &name],
            )
            .await?
            .map(|r| r.get(0)))
        })
    }

    fn faces_of(&self, person: i64) -> Result<Vec<LibraryFace>> {
        self.faces_where("f.person_id = $2", Some(person))
    }

    fn all_faces(&self) -> Result<Vec<LibraryFace>> {
        self.faces_where("f.embedding IS NOT NULL", None)
    }

    fn face(&self, id: i64) -> Result<LibraryFace> {
        let location = self.location();
        self.faces_where("f.id = $2", Some(id))?
            .pop()
            .ok_or_else(|| {
                GalleryError::NotInLibrary(format!("no face {id} in the photo library {location}"))
            })
    }

    fn photos_with(&self, people: &[i64]) -> Result<Vec<PhotoRow>> {
        let g = self.g();
        let people = people.to_vec();
        self.db.run(|c| async move {
            let rows = c
                .query(
                    "SELECT p.id, p.path, p.width, p.height FROM library_photos p
                     WHERE p.gallery_id = $1 AND (SELECT COUNT(DISTINCT f.person_id)
                        FROM library_faces f WHERE f.photo_id = p.id AND f.person_id = ANY($2)) = $3
                     ORDER BY p.path",
                    &[&g, &people, &(people.len() as i64)],
                )
                .await?;
            Ok(rows.iter().map(photo_row).collect())
        })
    }

    fn photo(&self, id: i64) -> Result<PhotoRow> {
        let g = self.g();
        let location = self.location();
        let row = self.db.run(|c| async move {
            Ok(c.query_opt(
                "SELECT id, path, width, height FROM library_photos WHERE id = $1 AND gallery_id = $2",
                &[&id, &g],
            )
            .await?
            .map(|r| photo_row(&r)))
        })?;
        row.ok_or_else(|| {
            GalleryError::NotInLibrary(format!("no photo {id} in the photo library {location}"))
        })
    }

    fn counts(&self) -> Result<[usize; 5]> {
        let g = self.g();
        self.db.run(|c| async move {
            let r = c
                .query_one(
                    "SELECT
                       (SELECT COUNT(*) FROM library_photos WHERE gallery_id = $1),
                       (SELECT COUNT(*) FROM library_photos WHERE gallery_id = $1 AND error IS NOT NULL),
                       (SELECT COUNT(*) FROM library_faces f JOIN library_photos p ON p.id = f.photo_id
                        WHERE p.gallery_id = $1),
                       (SELECT COUNT(*) FROM library_people WHERE gallery_id = $1),
                       (SELECT COUNT(*) FROM library_people WHERE gallery_id = $1 AND name IS NOT NULL)",
                    &[&g],
                )
                .await?;
            let n = |i: usize| r.get::<_, i64>(i) as usize;
            Ok([n(0), n(1), n(2), n(3), n(4)])
        })
    }

    fn set_name(&self, person: i64, name: Option<&str>) -> Result<()> {
        let g = self.g();
        self.db.run(|c| async move {
            c.execute(
                "UPDATE library_people SET name = $2 WHERE id = $1 AND gallery_id = $3",
                &[&person, &name, &g],
            )
            .await?;
            Ok(())
        })
    }

    fn merge(&self, target: i64, sources: &[i64], name: Option<&str>) -> Result<()> {
        let g = self.g();
        let sources = sources.to_vec();
        self.db.run(|mut c| async move {
            let tx = c.transaction().await?;
            for s in &sources {
                tx.execute(
                    "UPDATE library_faces SET person_id = $2 WHERE person_id = $1",
                    &[s, &target],
                )
                .await?;
                tx.execute(
                    "INSERT INTO library_rejects(face_id, person_id)
                     SELECT face_id, $2 FROM library_rejects WHERE person_id = $1
                     ON CONFLICT DO NOTHING",
                    &[s, &target],
                )
                .await?;
                tx.execute(
                    "DELETE FROM library_people WHERE id = $1 AND gallery_id = $2",
                    &[s, &g],
                )
                .await?;
            }
            tx.execute(
                "UPDATE library_people SET name = $2 WHERE id = $1",
                &[&target, &name],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn new_person(&self) -> Result<i64> {
        let g = self.g();
        self.db.run(|c| async move {
            Ok(c.query_one(
                "INSERT INTO library_people(gallery_id, created) VALUES ($1, $2) RETURNING id",
                &[&g, &crate::now()],
            )
            .await?
            .get(0))
        })
    }

    fn place_face(&self, face: i64, target: Option<i64>, left: Option<i64>) -> Result<()> {
        let g = self.g();
        self.db.run(|mut c| async move {
            let tx = c.transaction().await?;
            tx.execute(
                "UPDATE library_faces SET person_id = $2, pinned = true WHERE id = $1",
                &[&face, &target],
            )
            .await?;
            if let Some(old) = left {
                tx.execute(
                    "INSERT INTO library_rejects(face_id, person_id) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                    &[&face, &old],
                )
                .await?;
            }
            if let Some(t) = target {
                tx.execute(
                    "DELETE FROM library_rejects WHERE face_id = $1 AND person_id = $2",
                    &[&face, &t],
                )
                .await?;
            }
            delete_empty(&tx, g).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn forget(&self, person: i64) -> Result<usize> {
        let g = self.g();
        self.db.run(|mut c| async move {
            let tx = c.transaction().await?;
            let n = tx
                .execute(
                    "UPDATE library_faces SET embedding = NULL, person_id = NULL, pinned = true
                     WHERE person_id = $1",
                    &[&person],
                )
                .await?;
            tx.execute(
                "DELETE FROM library_people WHERE id = $1 AND gallery_id = $2",
                &[&person, &g],
            )
            .await?;
            tx.commit().await?;
            Ok(n as usize)
        })
    }
}

/// People left without faces go, unless named.
async fn delete_empty(
    tx: &deadpool_postgres::Transaction<'_>,
    g: i64,
) -> std::result::Result<(), Failure> {
    tx.execute(
        "DELETE FROM library_people p WHERE p.gallery_id = $1 AND p.name IS NULL
         AND NOT EXISTS (SELECT 1 FROM library_faces f WHERE f.person_id = p.id)",
        &[&g],
    )
    .await?;
    Ok(())
}
