//! The PostgreSQL + pgvector store: `postgres://user@host:port/db`. Many service instances
//! share one database; every write is a transaction, and every read goes to the database (no
//! per-instance cache), so a face enrolled through one instance is seen by the others at once.
//!
//! The schema lives in versioned migrations (`migrations/postgres/NNN_*.sql`), applied when a
//! store is opened under an advisory lock (two instances starting at once apply them once); a
//! database whose schema is newer than this build knows is refused. Embeddings are pgvector
//! `vector` values. Connections come from a bounded pool (deadpool-postgres).
//!
//! The store's trait is synchronous: calls run on a small runtime of the store's own. Call it
//! from plain threads or from `spawn_blocking`, not from async code directly.

use std::str::FromStr;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use pgvector::Vector;
use tokio_postgres::{NoTls, Row};

use facenet::eval::cohort::{COHORT_K, cohort_score};

use crate::search::{GalleryRule, Match};
use crate::tenants::{ApiKey, DEFAULT_GALLERY, Role, Tenants, check_gallery_name};
use crate::{
    FaceRecord, GalleryError, GalleryStore, HnswParams, ImportBatch, ModelInfo, NewFace, Result,
    Scoring, Settings, check_faces, check_identity_name,
};

/// The migrations, in order; the schema version is their count.
const MIGRATIONS: [&str; 3] = [
    include_str!("../migrations/postgres/001_init.sql"),
    include_str!("../migrations/postgres/002_centroids_hnsw.sql"),
    include_str!("../migrations/postgres/003_library.sql"),
];

/// Most connections one store holds.
pub const POOL_SIZE: usize = 16;

struct Inner {
    pool: Pool,
    rt: Option<tokio::runtime::Runtime>,
    location: String,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgreSQL store {}", self.location)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The store may be dropped inside another runtime (a service shutting down).
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// One gallery of a PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresGallery {
    inner: Arc<Inner>,
    gallery: i64,
    name: String,
}

/// Is `location` a PostgreSQL URL?
pub fn is_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

fn db_err(location: &str, e: impl std::error::Error + Send + Sync + 'static) -> GalleryError {
    GalleryError::Server {
        location: location.into(),
        source: Box::new(e),
    }
}

impl PostgresGallery {
    /// Connects (a bounded pool), applies the migrations, opens the default gallery. A wrong
    /// URL or a server that does not answer is an error naming the host.
    pub fn connect(url: &str) -> Result<Self> {
        let config = tokio_postgres::Config::from_str(url).map_err(|e| {
            GalleryError::Invalid(format!("gallery URL: not a PostgreSQL URL ({e})"))
        })?;
        let location = describe(&config);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("facenet-postgres")
            .enable_all()
            .build()
            .map_err(|e| GalleryError::Io {
                path: location.clone(),
                source: e,
            })?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(std::time::Duration::from_secs(30)))
            .create_timeout(Some(std::time::Duration::from_secs(10)))
            .build()
            .map_err(|e| db_err(&location, e))?;
        let inner = Arc::new(Inner {
            pool,
            rt: Some(rt),
            location,
        });
        let store = Self {
            inner,
            gallery: 0,
            name: String::new(),
        };
        store.migrate()?;
        store.open_gallery(DEFAULT_GALLERY)
    }

    /// The gallery's row id.
    pub(crate) fn id(&self) -> i64 {
        self.gallery
    }

    /// Another gallery of the same database (created, empty, if new).
    pub fn open_gallery(&self, name: &str) -> Result<Self> {
        check_gallery_name(name)?;
        let id = self.run(|c| async move {
            let row = c
                .query_one(
                    "INSERT INTO galleries(name, created) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
                    &[&name, &crate::now()],
                )
                .await?;
            Ok(row.get::<_, i64>(0))
        })?;
        Ok(Self {
            inner: self.inner.clone(),
            gallery: id,
            name: name.into(),
        })
    }

    /// Runs `f` with a pooled connection on the store's runtime.
    pub(crate) fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, Failure>>,
    {
        let location = &self.inner.location;
        let rt = self
            .inner
            .rt
            .as_ref()
            .expect("runtime lives as long as the store");
        rt.block_on(async {
            let client = self
                .inner
                .pool
                .get()
                .await
                .map_err(|e| GalleryError::Server {
                    location: location.clone(),
                    source: Box::new(e),
                })?;
            f(client).await.map_err(|e| match e {
                Failure::Db(e) => db_err(location, e),
                Failure::Gallery(g) => g,
            })
        })
    }

    fn migrate(&self) -> Result<()> {
        let known = MIGRATIONS.len() as i32;
        let location = self.inner.location.clone();
        self.run(|mut c| async move {
            let tx = c.transaction().await?;
            // One instance migrates at a time; the others wait, then find the work done.
            tx.execute("SELECT pg_advisory_xact_lock(7219640401)", &[]).await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS facenet_schema (version INTEGER NOT NULL)",
            )
            .await?;
            let version: Option<i32> = tx
                .query_opt("SELECT version FROM facenet_schema", &[])
                .await?
                .map(|r| r.get(0));
            let version = version.unwrap_or(0);
            if version > known {
                return Err(Failure::Gallery(GalleryError::Corrupt {
                    path: location,
                    reason: format!(
                        "schema version {version}, this facenet knows up to {known}: use a newer facenet"
                    ),
                }));
            }
            for sql in &MIGRATIONS[version as usize..] {
                tx.batch_execute(sql).await?;
            }
            tx.execute("DELETE FROM facenet_schema", &[]).await?;
            tx.execute("INSERT INTO facenet_schema(version) VALUES ($1)", &[&known])
                .await?;
            tx.commit().await?;
            Ok(())
        })
    }
}

impl PostgresGallery {
    /// Deletes this gallery with its subjects, faces, keys and indexes (benchmarks clean up
    /// with it).
    pub fn delete_gallery(self) -> Result<()> {
        self.set_index(None)?;
        let g = self.gallery;
        self.run(|c| async move {
            c.execute("DELETE FROM galleries WHERE id = $1", &[&g])
                .await?;
            Ok(())
        })
    }
}

/// A database error, or a gallery error decided inside a transaction.
pub(crate) enum Failure {
    Db(tokio_postgres::Error),
    Gallery(GalleryError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Db(e)
    }
}

impl From<GalleryError> for Failure {
    fn from(e: GalleryError) -> Self {
        Failure::Gallery(e)
    }
}

/// `postgres://user@host:port/db`, without the password.
fn describe(c: &tokio_postgres::Config) -> String {
    let host = c
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        c.get_user().unwrap_or(""),
        c.get_dbname().unwrap_or("")
    )
}

fn face(r: &Row) -> FaceRecord {
    let coords: [Option<f32>; 4] = [r.get(4), r.get(5), r.get(6), r.get(7)];
    let bbox = match coords {
        [Some(a), Some(b), Some(c), Some(d)] => Some([a, b, c, d]),
        _ => None,
    };
    FaceRecord {
        id: r.get(0),
        identity: r.get(1),
        embedding: r.get::<_, Vector>(2).to_vec(),
        source: r.get(3),
        bbox,
        created: r.get(8),
    }
}

const FACE_COLUMNS: &str = "f.id, s.name, f.embedding, f.source, f.x1, f.y1, f.x2, f.y2, f.created";

async fn subject_id(
    c: &impl deadpool_postgres::GenericClient,
    gallery: i64,
    name: &str,
) -> std::result::Result<Option<i64>, Failure> {
    Ok(c.query_opt(
        "SELECT id FROM subjects WHERE gallery_id = $1 AND name = $2",
        &[&gallery, &name],
    )
    .await?
    .map(|r| r.get(0)))
}

/// Locks the gallery's row for the rest of the transaction: writes to one gallery run one
/// after the other, so the model check, a subject's creation and its centroid cannot race.
/// Returns the gallery's model.
async fn lock_gallery(
    tx: &deadpool_postgres::Transaction<'_>,
    gallery: i64,
) -> std::result::Result<(Option<String>, Option<i32>), Failure> {
    let r = tx
        .query_one(
            "SELECT model_fingerprint, model_dim FROM galleries WHERE id = $1 FOR UPDATE",
            &[&gallery],
        )
        .await?;
    Ok((r.get(0), r.get(1)))
}

/// Recomputes a subject's centroid from its faces (NULL when it has none).
async fn update_centroid(
    tx: &deadpool_postgres::Transaction<'_>,
    subject: i64,
) -> std::result::Result<(), Failure> {
    tx.execute(
        "UPDATE subjects SET centroid =
           (SELECT l2_normalize(avg(embedding)) FROM faces WHERE subject_id = $1)
         WHERE id = $1",
        &[&subject],
    )
    .await?;
    Ok(())
}

/// Adds faces to a subject (created if new) inside `tx`, each enrolled at `times[i]`, after
/// the model check; updates the subject's centroid. Returns the new faces' ids.
async fn enroll_tx(
    tx: &deadpool_postgres::Transaction<'_>,
    g: i64,
    identity: &str,
    faces: &[NewFace],
    times: &[i64],
    model: &ModelInfo,
) -> std::result::Result<Vec<i64>, Failure> {
    let (fp, dim) = lock_gallery(tx, g).await?;
    if let (Some(fp), Some(dim)) = (fp, dim)
        && (fp != model.fingerprint || dim as usize != model.dim)
    {
        return Err(Failure::Gallery(GalleryError::ModelMismatch {
            gallery: fp.chars().take(12).collect(),
            gallery_dim: dim as usize,
            given: model.short(),
            given_dim: model.dim,
        }));
    }
    tx.execute(
        "UPDATE galleries SET model_fingerprint = $2, model_dim = $3 WHERE id = $1",
        &[&g, &model.fingerprint, &(model.dim as i32)],
    )
    .await?;
    tx.execute(
        "INSERT INTO subjects(gallery_id, name, created) VALUES ($1, $2, $3)
         ON CONFLICT (gallery_id, name) DO NOTHING",
        &[&g, &identity, &crate::now()],
    )
    .await?;
    let sid = subject_id(tx, g, identity).await?.expect("inserted");
    let mut ids = Vec::with_capacity(faces.len());
    for (f, created) in faces.iter().zip(times) {
        let b = f.bbox;
        let row = tx
            .query_one(
                "INSERT INTO faces(subject_id, gallery_id, embedding, fingerprint, source, x1, y1, x2, y2, created)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
                &[
                    &sid,
                    &g,
                    &Vector::from(f.embedding.clone()),
                    &model.fingerprint,
                    &f.source,
                    &b.map(|b| b[0]),
                    &b.map(|b| b[1]),
                    &b.map(|b| b[2]),
                    &b.map(|b| b[3]),
                    created,
                ],
            )
            .await?;
        ids.push(row.get(0));
    }
    update_centroid(tx, sid).await?;
    Ok(ids)
}

fn params(text: &str) -> std::result::Result<HnswParams, Failure> {
    serde_json::from_str(text).map_err(|e| {
        Failure::Gallery(GalleryError::Invalid(format!(
            "the stored HNSW parameters `{text}` are unreadable: {e}"
        )))
    })
}

fn matches(rows: &[Row]) -> Vec<Match> {
    rows.iter()
        .map(|r| Match {
            identity: r.get(0),
            distance: r.get::<_, f64>(1) as f32,
            source: r.get(2),
            cohort_score: None,
        })
        .collect()
}

/// Exact search in the database: every subject's centroid, or every face with the best per
/// subject kept.
async fn search_exact(
    c: &impl deadpool_postgres::GenericClient,
    g: i64,
    q: &Vector,
    k: usize,
    rule: GalleryRule,
) -> std::result::Result<Vec<Match>, Failure> {
    let sql = match rule {
        GalleryRule::Centroid => {
            "SELECT s.name, s.d,
                    'centroid of ' || (SELECT COUNT(*) FROM faces WHERE subject_id = s.id) || ' face(s)'
             FROM (SELECT id, name, centroid <-> $1 AS d FROM subjects
                   WHERE gallery_id = $2 AND centroid IS NOT NULL
                   ORDER BY d, name LIMIT $3) s
             ORDER BY s.d, s.name"
        }
        GalleryRule::NearestSample => {
            "SELECT name, d, source FROM (
                 SELECT DISTINCT ON (s.name) s.name, f.embedding <-> $1 AS d, f.source
                 FROM faces f JOIN subjects s ON s.id = f.subject_id
                 WHERE f.gallery_id = $2 ORDER BY s.name, d, f.id) best
             ORDER BY d, name LIMIT $3"
        }
    };
    Ok(matches(&c.query(sql, &[q, &g, &(k as i64)]).await?))
}

/// Search through the gallery's HNSW indexes (partial indexes of this gallery alone, so
/// other galleries never crowd its candidates out). pgvector's iterative scan keeps reading
/// the graph until the query's LIMIT is met; the nearest-sample rule reads 10 faces per
/// subject asked for, keeps the best face of each subject, and reads more while it has
/// fewer than `k` subjects. `None`: still short of `k` after that (a few subjects with very
/// many faces): the caller searches exactly.
async fn search_hnsw(
    tx: &deadpool_postgres::Transaction<'_>,
    g: i64,
    q: &Vector,
    k: usize,
    rule: GalleryRule,
    p: HnswParams,
    dim: i32,
) -> std::result::Result<Option<Vec<Match>>, Failure> {
    tx.batch_execute(&format!(
        "SET LOCAL hnsw.ef_search = {}; SET LOCAL hnsw.iterative_scan = relaxed_order",
        p.ef_search
    ))
    .await?;
    // The gallery id is written into the text (an integer of ours) so that the planner can
    // match the partial index's predicate.
    if rule == GalleryRule::Centroid {
        let sql = format!(
            "SELECT s.name, s.d,
                    'centroid of ' || (SELECT COUNT(*) FROM faces WHERE subject_id = s.id) || ' face(s)'
             FROM (SELECT id, name, centroid::vector({dim}) <-> $1 AS d FROM subjects
                   WHERE gallery_id = {g}
                   ORDER BY centroid::vector({dim}) <-> $1 LIMIT $2) s
             ORDER BY s.d, s.name"
        );
        return Ok(Some(matches(&tx.query(&sql, &[q, &(k as i64)]).await?)));
    }
    let sql = format!(
        "SELECT s.name, f.d, f.source FROM (
             SELECT id, subject_id, source, embedding::vector({dim}) <-> $1 AS d FROM faces
             WHERE gallery_id = {g}
             ORDER BY embedding::vector({dim}) <-> $1 LIMIT $2) f
         JOIN subjects s ON s.id = f.subject_id
         ORDER BY f.d, f.id"
    );
    let mut limit = 10 * k;
    for _ in 0..3 {
        let rows = tx.query(&sql, &[q, &(limit as i64)]).await?;
        let mut seen = std::collections::HashSet::new();
        let best: Vec<Match> = matches(&rows)
            .into_iter()
            .filter(|m| seen.insert(m.identity.clone()))
            .take(k)
            .collect();
        if best.len() == k || rows.len() < limit {
            return Ok(Some(best));
        }
        limit *= 4;
    }
    Ok(None)
}

/// How many of the entries nearest by distance the cohort score is computed for. On LFW
/// (galleries of 1,680 and 1,830 entries, 20,525 probes), ranking the nearest 32 instead of
/// every entry named the same person, or nobody, for every probe at the default threshold.
const COHORT_CANDIDATES: usize = 32;

/// The HNSW search breadth of a cohort search (pgvector's default): at 10^5 faces it gave the
/// exact cohort search's best identity on every query, at 22.6 and 25.0 ms per query in two
/// runs where the gallery's default of 100 took 54.2 ms (`bench search --store`, nearest face).
const COHORT_EF_SEARCH: u32 = 40;

/// Search by the cohort score ([`facenet::eval::cohort`]) in the database: the
/// [`COHORT_CANDIDATES`] entries nearest by distance, each with its mean distance to its
/// [`COHORT_K`] nearest entries of other subjects (a lateral nearest-neighbour query per
/// candidate, through the gallery's HNSW index where it has one), ranked by distance less
/// that mean; the best entry of each subject is kept. Nothing is stored: every search sees
/// the gallery as it is, whichever instance wrote it.
async fn search_cohort(
    c: &impl deadpool_postgres::GenericClient,
    g: i64,
    q: &Vector,
    k: usize,
    rule: GalleryRule,
    dim: Option<i32>,
) -> std::result::Result<Vec<Match>, Failure> {
    let mut best: Vec<Match> = Vec::new();
    for r in c.query(&cohort_sql(g, rule, dim), &[q]).await? {
        let identity: String = r.get(0);
        let distance = r.get::<_, f64>(1) as f32;
        // No entry of another subject: nothing to subtract (a cohort needs six subjects).
        let mean = r.get::<_, Option<f64>>(3).unwrap_or(0.0) as f32;
        let score = cohort_score(distance, mean);
        match best.iter_mut().find(|m| m.identity == identity) {
            Some(m) if m.cohort_score.is_some_and(|s| s <= score) => {}
            Some(m) => {
                (m.distance, m.source, m.cohort_score) = (distance, r.get(2), Some(score));
            }
            None => best.push(Match {
                identity,
                distance,
                source: r.get(2),
                cohort_score: Some(score),
            }),
        }
    }
    best.sort_by(|a, b| {
        let key = |m: &Match| m.cohort_score.unwrap_or(m.distance);
        key(a)
            .total_cmp(&key(b))
            .then_with(|| a.identity.cmp(&b.identity))
    });
    best.truncate(k);
    Ok(best)
}

/// [`search_cohort`]'s query of gallery `g` (`$1`: the probe): each candidate's subject,
/// distance, source and cohort mean. `dim`: the gallery's HNSW indexes are read, whose
/// expression casts to `vector(dim)`.
fn cohort_sql(g: i64, rule: GalleryRule, dim: Option<i32>) -> String {
    // The column as the HNSW index reads it, so that the planner matches its expression.
    let col = |name: &str| match dim {
        Some(d) => format!("{name}::vector({d})"),
        None => name.to_string(),
    };
    match rule {
        GalleryRule::Centroid => {
            let e = col("centroid");
            format!(
                "SELECT c.name, c.d,
                        'centroid of ' || (SELECT COUNT(*) FROM faces WHERE subject_id = c.id)
                          || ' face(s)',
                        m.mean
                 FROM (SELECT id, name, {e} AS v, {e} <-> $1 AS d FROM subjects
                       WHERE gallery_id = {g} AND centroid IS NOT NULL
                       ORDER BY {e} <-> $1 LIMIT {COHORT_CANDIDATES}) c
                 CROSS JOIN LATERAL (
                     SELECT avg(n.d) AS mean FROM (
                         SELECT {e} <-> c.v AS d FROM subjects
                         WHERE gallery_id = {g} AND centroid IS NOT NULL AND id <> c.id
                         ORDER BY {e} <-> c.v LIMIT {COHORT_K}) n) m"
            )
        }
        GalleryRule::NearestSample => {
            let e = col("embedding");
            format!(
                "SELECT s.name, c.d, c.source, m.mean
                 FROM (SELECT id, subject_id, source, {e} AS v, {e} <-> $1 AS d FROM faces
                       WHERE gallery_id = {g}
                       ORDER BY {e} <-> $1 LIMIT {COHORT_CANDIDATES}) c
                 JOIN subjects s ON s.id = c.subject_id
                 CROSS JOIN LATERAL (
                     SELECT avg(n.d) AS mean FROM (
                         SELECT {e} <-> c.v AS d FROM faces
                         WHERE gallery_id = {g} AND subject_id <> c.subject_id
                         ORDER BY {e} <-> c.v LIMIT {COHORT_K}) n) m"
            )
        }
    }
}

/// Index names of a gallery: its faces' and its subjects' centroids'.
fn index_names(gallery: i64) -> [String; 2] {
    [
        format!("faces_hnsw_{gallery}"),
        format!("subjects_hnsw_{gallery}"),
    ]
}

impl GalleryStore for PostgresGallery {
    fn location(&self) -> String {
        if self.name == DEFAULT_GALLERY {
            self.inner.location.clone()
        } else {
            format!("{} (gallery {})", self.inner.location, self.name)
        }
    }

    fn model(&self) -> Result<Option<ModelInfo>> {
        let g = self.gallery;
        self.run(|c| async move {
            let r = c
                .query_one(
                    "SELECT model_fingerprint, model_dim FROM galleries WHERE id = $1",
                    &[&g],
                )
                .await?;
            let fp: Option<String> = r.get(0);
            let dim: Option<i32> = r.get(1);
            Ok(fp.zip(dim).map(|(fingerprint, dim)| ModelInfo {
                fingerprint,
                dim: dim as usize,
            }))
        })
    }

    fn enroll(&self, identity: &str, faces: &[NewFace], model: &ModelInfo) -> Result<Vec<i64>> {
        check_identity_name(identity)?;
        check_faces(faces, model)?;
        let g = self.gallery;
        self.run(|mut c| async move {
            let tx = c.transaction().await?;
            let times = vec![crate::now(); faces.len()];
            let ids = enroll_tx(&tx, g, identity, faces, &times, model).await?;
            tx.commit().await?;
            Ok(ids)
        })
    }

    fn import(&self, batch: &ImportBatch) -> Result<usize> {
        for (name, faces, _) in &batch.identities {
            check_identity_name(name)?;
            if let Some(m) = &batch.model {
                check_faces(faces, m)?;
            }
        }
        let g = self.gallery;
        self.run(|mut c| async move {
            let tx = c.transaction().await?;
            lock_gallery(&tx, g).await?;
            let mut n = 0;
            for (name, faces, times) in &batch.identities {
                match &batch.model {
                    Some(m) if !faces.is_empty() => {
                        n += enroll_tx(&tx, g, name, faces, times, m).await?.len();
                    }
                    _ => {
                        tx.execute(
                            "INSERT INTO subjects(gallery_id, name, created) VALUES ($1, $2, $3)
                             ON CONFLICT (gallery_id, name) DO NOTHING",
                            &[&g, name, &crate::now()],
                        )
                        .await?;
                    }
                }
            }
            tx.commit().await?;
            Ok(n)
        })
    }

    fn create_identity(&self, identity: &str) -> Result<()> {
        check_identity_name(identity)?;
        let g = self.gallery;
        self.run(|c| async move {
            let n = c
                .execute(
                    "INSERT INTO subjects(gallery_id, name, created) VALUES ($1, $2, $3)
                     ON CONFLICT (gallery_id, name) DO NOTHING",
                    &[&g, &identity, &crate::now()],
                )
                .await?;
            if n == 0 {
                return Err(Failure::Gallery(GalleryError::NameTaken(identity.into())));
            }
            Ok(())
        })
    }

    fn identities(&self) -> Result<Vec<(String, usize)>> {
        let g = self.gallery;
        self.run(|c| async move {
            let rows = c
                .query(
                    "SELECT s.name, COUNT(f.id) FROM subjects s LEFT JOIN faces f ON f.subject_id = s.id
                     WHERE s.gallery_id = $1 GROUP BY s.id, s.name ORDER BY s.name",
                    &[&g],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as usize))
                .collect())
        })
    }

    fn faces(&self, identity: Option<&str>) -> Result<Vec<FaceRecord>> {
        let g = self.gallery;
        self.run(|c| async move {
            if let Some(name) = identity
                && subject_id(&c, g, name).await?.is_none()
            {
                return Err(Failure::Gallery(GalleryError::UnknownIdentity(name.into())));
            }
            let rows = c
                .query(
                    &format!(
                        "SELECT {FACE_COLUMNS} FROM faces f JOIN subjects s ON s.id = f.subject_id
                         WHERE s.gallery_id = $1 AND ($2::TEXT IS NULL OR s.name = $2)
                         ORDER BY s.name, f.id"
                    ),
                    &[&g, &identity],
                )
                .await?;
            Ok(rows.iter().map(face).collect())
        })
    }

    fn identities_page(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<(String, usize)>, usize)> {
        let g = self.gallery;
        let (offset, limit) = (offset as i64, limit as i64);
        self.run(|c| async move {
            let total: i64 = c
                .query_one("SELECT COUNT(*) FROM subjects WHERE gallery_id = $1", &[&g])
                .await?
                .get(0);
            let rows = c
                .query(
                    "SELECT s.name, (SELECT COUNT(*) FROM faces f WHERE f.subject_id = s.id)
                     FROM subjects s WHERE s.gallery_id = $1 ORDER BY s.name LIMIT $2 OFFSET $3",
                    &[&g, &limit, &offset],
                )
                .await?;
            let page = rows
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as usize))
                .collect();
            Ok((page, total as usize))
        })
    }

    fn faces_page(
        &self,
        identity: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<FaceRecord>, usize)> {
        let g = self.gallery;
        let (offset, limit) = (offset as i64, limit as i64);
        self.run(|c| async move {
            if let Some(name) = identity
                && subject_id(&c, g, name).await?.is_none()
            {
                return Err(Failure::Gallery(GalleryError::UnknownIdentity(name.into())));
            }
            let filter = "FROM faces f JOIN subjects s ON s.id = f.subject_id
                          WHERE s.gallery_id = $1 AND ($2::TEXT IS NULL OR s.name = $2)";
            let total: i64 = c
                .query_one(&format!("SELECT COUNT(*) {filter}"), &[&g, &identity])
                .await?
                .get(0);
            let rows = c
                .query(
                    &format!(
                        "SELECT {FACE_COLUMNS} {filter} ORDER BY s.name, f.id LIMIT $3 OFFSET $4"
                    ),
                    &[&g, &identity, &limit, &offset],
                )
                .await?;
            Ok((rows.iter().map(face).collect(), total as usize))
        })
    }

    fn remove(&self, identity: &str) -> Result<usize> {
        let g = self.gallery;
        self.run(|mut c| async move {
            let tx = c.transaction().await?;
            let sid = subject_id(&tx, g, identity)
                .await?
                .ok_or_else(|| GalleryError::UnknownIdentity(identity.into()))?;
            let n = tx
                .execute("DELETE FROM faces WHERE subject_id = $1", &[&sid])
                .await?;
            tx.execute("DELETE FROM subjects WHERE id = $1", &[&sid])
                .await?;
            tx.commit().await?;
            Ok(n as usize)
        })
    }

    fn remove_face(&self, id: i64) -> Result<FaceRecord> {
        let g = self.gallery;
        self.run(|mut c| async move {
            let tx = c.transaction().await?;
            lock_gallery(&tx, g).await?;
            let row = tx
                .query_opt(
                    &format!(
                        "SELECT {FACE_COLUMNS}, f.subject_id FROM faces f
                         JOIN subjects s ON s.id = f.subject_id
                         WHERE f.id = $1 AND s.gallery_id = $2"
                    ),
                    &[&id, &g],
                )
                .await?
                .ok_or(GalleryError::UnknownFace(id))?;
            tx.execute("DELETE FROM faces WHERE id = $1", &[&id])
                .await?;
            update_centroid(&tx, row.get(9)).await?;
            tx.commit().await?;
            Ok(face(&row))
        })
    }

    fn rename(&self, old: &str, new: &str) -> Result<()> {
        check_identity_name(new)?;
        let g = self.gallery;
        self.run(|mut c| async move {
            let tx = c.transaction().await?;
            let sid = subject_id(&tx, g, old)
                .await?
                .ok_or_else(|| GalleryError::UnknownIdentity(old.into()))?;
            if subject_id(&tx, g, new).await?.is_some() {
                return Err(Failure::Gallery(GalleryError::NameTaken(new.into())));
            }
            tx.execute("UPDATE subjects SET name = $1 WHERE id = $2", &[&new, &sid])
                .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn search(
        &self,
        probe: &[f32],
        k: usize,
        rule: GalleryRule,
        scoring: Scoring,
    ) -> Result<Option<Vec<Match>>> {
        let g = self.gallery;
        let q = Vector::from(probe.to_vec());
        let k = k.max(1);
        self.run(|mut c| async move {
            let r = c
                .query_one("SELECT hnsw, model_dim FROM galleries WHERE id = $1", &[&g])
                .await?;
            let index = match (r.get::<_, Option<String>>(0), r.get::<_, Option<i32>>(1)) {
                (Some(p), Some(dim)) => Some((params(&p)?, dim)),
                _ => None,
            };
            if scoring == Scoring::Cohort {
                let Some((p, dim)) = index else {
                    return Ok(Some(search_cohort(&c, g, &q, k, rule, None).await?));
                };
                // Strict order: each candidate's neighbours are the nearest, not nearly. The
                // graph is read with at most COHORT_EF_SEARCH: 32 candidates and 5 neighbours
                // each need no more, and each of the 33 graph searches costs in proportion.
                let tx = c.transaction().await?;
                tx.batch_execute(&format!(
                    "SET LOCAL hnsw.ef_search = {}; SET LOCAL hnsw.iterative_scan = strict_order",
                    p.ef_search.min(COHORT_EF_SEARCH)
                ))
                .await?;
                let found = search_cohort(&tx, g, &q, k, rule, Some(dim)).await?;
                tx.commit().await?;
                return Ok(Some(found));
            }
            // A transaction only for the index's SET LOCAL settings.
            let found = match index {
                Some((p, dim)) => {
                    let tx = c.transaction().await?;
                    let found = search_hnsw(&tx, g, &q, k, rule, p, dim).await?;
                    tx.commit().await?;
                    found
                }
                None => None,
            };
            let found = match found {
                Some(m) => m,
                None => search_exact(&c, g, &q, k, rule).await?,
            };
            Ok(Some(found))
        })
    }

    fn entries(&self, rule: GalleryRule) -> Result<Option<(usize, usize)>> {
        let g = self.gallery;
        self.run(|c| async move {
            let r = c
                .query_one(
                    "SELECT COUNT(DISTINCT subject_id), COUNT(*) FROM faces WHERE gallery_id = $1",
                    &[&g],
                )
                .await?;
            let (identities, faces) = (r.get::<_, i64>(0) as usize, r.get::<_, i64>(1) as usize);
            Ok(Some(match rule {
                GalleryRule::Centroid => (identities, identities),
                GalleryRule::NearestSample => (identities, faces),
            }))
        })
    }

    fn set_index(&self, p: Option<HnswParams>) -> Result<()> {
        if let Some(p) = &p {
            p.check()?;
        }
        let g = self.gallery;
        let location = GalleryStore::location(self);
        self.run(|c| async move {
            // CONCURRENTLY: enrolments into this and every other gallery go on during the
            // build (a plain CREATE INDEX would hold writes to the faces table). It cannot run
            // inside a transaction, so each statement is sent alone; an index left invalid by
            // an interrupted build is dropped by the next call.
            let [faces, subjects] = index_names(g);
            c.execute("UPDATE galleries SET hnsw = NULL WHERE id = $1", &[&g])
                .await?;
            for name in [&faces, &subjects] {
                c.batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"))
                    .await?;
            }
            let Some(p) = p else {
                return Ok(());
            };
            let dim: Option<i32> = c
                .query_one("SELECT model_dim FROM galleries WHERE id = $1", &[&g])
                .await?
                .get(0);
            let Some(dim) = dim else {
                return Err(Failure::Gallery(GalleryError::Invalid(format!(
                    "{location}: the gallery has no faces yet; enrol some first (the index \
                     needs their dimension)"
                ))));
            };
            let with = format!(
                "WITH (m = {}, ef_construction = {})",
                p.m, p.ef_construction
            );
            c.batch_execute("SET maintenance_work_mem = '512MB'")
                .await?;
            let built = async {
                c.batch_execute(&format!(
                    "CREATE INDEX CONCURRENTLY {faces} ON faces
                       USING hnsw ((embedding::vector({dim})) vector_l2_ops) {with}
                       WHERE gallery_id = {g}"
                ))
                .await?;
                c.batch_execute(&format!(
                    "CREATE INDEX CONCURRENTLY {subjects} ON subjects
                       USING hnsw ((centroid::vector({dim})) vector_l2_ops) {with}
                       WHERE gallery_id = {g}"
                ))
                .await
            }
            .await;
            c.batch_execute("RESET maintenance_work_mem").await?;
            built?;
            let stored = serde_json::to_string(&p).expect("plain numbers");
            c.execute(
                "UPDATE galleries SET hnsw = $2 WHERE id = $1",
                &[&g, &stored],
            )
            .await?;
            Ok(())
        })
    }

    fn index(&self) -> Result<Option<HnswParams>> {
        let g = self.gallery;
        self.run(|c| async move {
            let r = c
                .query_one("SELECT hnsw FROM galleries WHERE id = $1", &[&g])
                .await?;
            r.get::<_, Option<String>>(0)
                .map(|t| params(&t))
                .transpose()
        })
    }

    fn settings(&self) -> Result<Settings> {
        let g = self.gallery;
        let text = self.run(|c| async move {
            let r = c
                .query_one("SELECT settings FROM galleries WHERE id = $1", &[&g])
                .await?;
            Ok(r.get::<_, String>(0))
        })?;
        serde_json::from_str(&text).map_err(|e| GalleryError::Corrupt {
            path: GalleryStore::location(self),
            reason: format!("the stored settings are unreadable: {e}"),
        })
    }

    fn set_settings(&self, settings: &Settings) -> Result<()> {
        settings.check()?;
        let text = serde_json::to_string(settings)
            .map_err(|e| GalleryError::Invalid(format!("cannot encode the settings: {e}")))?;
        let g = self.gallery;
        self.run(|c| async move {
            c.execute(
                "UPDATE galleries SET settings = $2 WHERE id = $1",
                &[&g, &text],
            )
            .await?;
            Ok(())
        })
    }
}

fn key(r: &Row) -> std::result::Result<(ApiKey, String), Failure> {
    Ok((
        ApiKey {
            id: r.get(0),
            gallery: r.get(1),
            role: Role::parse(r.get(2))?,
            label: r.get(3),
            created: r.get(4),
        },
        r.get(5),
    ))
}

const KEY_COLUMNS: &str = "k.id, g.name, k.role, k.label, k.created, k.hash";

impl Tenants for PostgresGallery {
    fn location(&self) -> String {
        self.inner.location.clone()
    }

    fn gallery(&self, name: &str) -> Result<Arc<dyn GalleryStore>> {
        Ok(Arc::new(self.open_gallery(name)?))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn galleries(&self) -> Result<Vec<String>> {
        self.run(|c| async move {
            let rows = c
                .query("SELECT name FROM galleries ORDER BY name", &[])
                .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn insert_key(&self, k: &ApiKey, hash: &str) -> Result<()> {
        let g = self.open_gallery(&k.gallery)?.gallery;
        self.run(|c| async move {
            c.execute(
                "INSERT INTO api_keys(id, hash, gallery_id, role, label, created)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&k.id, &hash, &g, &k.role.as_str(), &k.label, &k.created],
            )
            .await?;
            Ok(())
        })
    }

    fn key(&self, id: &str) -> Result<Option<(ApiKey, String)>> {
        self.run(|c| async move {
            let row = c
                .query_opt(
                    &format!(
                        "SELECT {KEY_COLUMNS} FROM api_keys k JOIN galleries g ON g.id = k.gallery_id
                         WHERE k.id = $1"
                    ),
                    &[&id],
                )
                .await?;
            row.as_ref().map(key).transpose()
        })
    }

    fn keys(&self) -> Result<Vec<ApiKey>> {
        self.run(|c| async move {
            let rows = c
                .query(
                    &format!(
                        "SELECT {KEY_COLUMNS} FROM api_keys k JOIN galleries g ON g.id = k.gallery_id
                         ORDER BY g.name, k.id"
                    ),
                    &[],
                )
                .await?;
            rows.iter().map(|r| key(r).map(|k| k.0)).collect()
        })
    }

    fn revoke_key(&self, id: &str) -> Result<bool> {
        self.run(|c| async move {
            Ok(c.execute("DELETE FROM api_keys WHERE id = $1", &[&id])
                .await?
                > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store_tests;
    use std::error::Error as _;

    const NEEDS: &str = "FACENET_TEST_PG=postgres://USER@HOST:PORT/DB of a PostgreSQL with pgvector \
                         whose user may create databases (.ci/run starts one)";

    /// A new empty database on the test server; its URL.
    fn fresh_db() -> String {
        let admin = std::env::var("FACENET_TEST_PG").expect(NEEDS);
        let mut r = [0u8; 6];
        getrandom::fill(&mut r).unwrap();
        let name: String = r.iter().map(|b| format!("{b:02x}")).collect();
        let name = format!("facenet_test_{name}");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (c, conn) = tokio_postgres::connect(&admin, NoTls).await.expect(NEEDS);
            tokio::spawn(conn);
            c.batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
        });
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        format!("{base}/{name}")
    }

    #[test]
    #[ignore = "needs PostgreSQL with pgvector (FACENET_TEST_PG); .ci/run starts one and runs `cargo test -- --ignored postgres_`"]
    fn postgres_passes_the_store_tests() {
        store_tests::all(&|| {
            let url = fresh_db();
            Box::new(move || Arc::new(PostgresGallery::connect(&url).unwrap()))
        });
    }

    /// Search in the database agrees with the in-process exact search, under both rules:
    /// the same identities in the same order, distances within 1e-4 (the in-process search
    /// takes `sqrt(2 - 2 a.b)` in f32, which loses digits for near-identical vectors).
    #[test]
    #[ignore = "needs PostgreSQL with pgvector (FACENET_TEST_PG); .ci/run starts one and runs `cargo test -- --ignored postgres_`"]
    fn postgres_search_agrees_with_exact_search() {
        let url = fresh_db();
        let g = PostgresGallery::connect(&url).unwrap();
        let m = ModelInfo {
            fingerprint: "a".repeat(64),
            dim: 16,
        };
        let unit = |seed: usize| -> Vec<f32> {
            let v: Vec<f32> = (0..16)
                .map(|i| ((seed * 31 + i * 7) as f32 * 0.731).sin())
                .collect();
            facenet::embed::l2_normalize(&v)
        };
        for person in 0..8 {
            let faces: Vec<NewFace> = (0..1 + person % 3)
                .map(|j| NewFace {
                    embedding: unit(person * 10 + j),
                    source: format!("p{person}-{j}.jpg"),
                    bbox: None,
                })
                .collect();
            g.enroll(&format!("person{person}"), &faces, &m).unwrap();
        }
        // A removed face leaves its subject's centroid; a schema-1 database (no stored
        // centroids) gets them when migrated.
        let third = g.faces(Some("person2")).unwrap()[2].id;
        g.remove_face(third).unwrap();
        g.run(|c| async move {
            c.batch_execute(
                "ALTER TABLE subjects DROP COLUMN centroid; ALTER TABLE galleries DROP COLUMN hnsw;
                 UPDATE facenet_schema SET version = 1",
            )
            .await?;
            Ok(())
        })
        .unwrap();
        let g = PostgresGallery::connect(&url).unwrap();
        let all = g.faces(None).unwrap();
        assert_eq!(all.len(), 14);
        for rule in [GalleryRule::Centroid, GalleryRule::NearestSample] {
            let index = crate::SearchIndex::with_rule(&all, rule).unwrap();
            assert_eq!(g.entries(rule).unwrap(), Some((8, index.len())));
            for probe in 0..10 {
                let q = unit(1000 + probe);
                let want = index.search_exact(&q, 3).unwrap();
                let got = g.search(&q, 3, rule, Scoring::Distance).unwrap().unwrap();
                assert_eq!(got.len(), 3);
                for (a, b) in got.iter().zip(&want) {
                    assert_eq!(a.identity, b.identity, "{rule:?} probe {probe}");
                    assert!((a.distance - b.distance).abs() < 1e-4, "{a:?} {b:?}");
                    assert_eq!(a.cohort_score, None);
                }
                // By the cohort score: the same ranking, distances and scores as the gallery
                // ranked whole in memory.
                let want = index.search_cohort(&q, 3).unwrap();
                let got = g.search(&q, 3, rule, Scoring::Cohort).unwrap().unwrap();
                assert_eq!(got.len(), 3);
                for (a, b) in got.iter().zip(&want) {
                    assert_eq!(
                        a.identity, b.identity,
                        "{rule:?} probe {probe} {got:?} {want:?}"
                    );
                    assert_eq!(a.source, b.source, "{rule:?} probe {probe}");
                    assert!((a.distance - b.distance).abs() < 1e-4, "{a:?} {b:?}");
                    let (sa, sb) = (a.cohort_score.unwrap(), b.cohort_score.unwrap());
                    assert!((sa - sb).abs() < 1e-4, "{a:?} {b:?}");
                }
            }
        }
    }

    /// The HNSW indexes: the planner uses them, recall@1 against exact search is measured
    /// on 3000 face-like embeddings (both rules, at least 0.95), another gallery's faces are
    /// never candidates, faces enrolled after the build are found, and dropping them returns
    /// the gallery to exact search.
    #[test]
    #[ignore = "needs PostgreSQL with pgvector (FACENET_TEST_PG); .ci/run starts one and runs `cargo test -- --ignored postgres_`"]
    fn postgres_hnsw_index_recall_plan_and_isolation() {
        let store = PostgresGallery::connect(&fresh_db()).unwrap();
        let other = store.open_gallery("other").unwrap();
        // The other gallery holds copies of the probes themselves: were its faces candidates,
        // they would win every search.
        let fl = crate::synthetic::face_like(300, 10, 40, 128, 11);
        let m = ModelInfo {
            fingerprint: format!("{:064x}", 0x5e17_u64),
            dim: 128,
        };
        let copies: Vec<NewFace> = fl
            .queries
            .chunks_exact(128)
            .map(|q| NewFace {
                embedding: q.to_vec(),
                source: "other".into(),
                bbox: None,
            })
            .collect();
        other.enroll("intruder", &copies, &m).unwrap();
        other.set_index(Some(HnswParams::default())).unwrap();
        assert_eq!(store.index().unwrap(), None);
        let r = crate::synthetic::store_search_bench(
            &store,
            3000,
            40,
            Some(HnswParams::default()),
            &|_| {},
        )
        .unwrap();
        // The cohort score ranks the 32 nearest entries, not all: on these faces it still
        // names whom ranking all of them in memory names, with the same score.
        assert!(
            r.cohort_agree.iter().all(|&a| a >= 0.95),
            "cohort search against memory {:?}",
            r.cohort_agree
        );
        let h = r.hnsw.unwrap();
        assert!(
            h.recall.iter().chain(&h.cohort_recall).all(|&r| r >= 0.95),
            "recall@1 {:?}, by the cohort score {:?}",
            h.recall,
            h.cohort_recall
        );
        assert_eq!(store.index().unwrap(), Some(HnswParams::default()));
        for q in fl.queries.chunks_exact(128) {
            for rule in [GalleryRule::Centroid, GalleryRule::NearestSample] {
                for scoring in [Scoring::Distance, Scoring::Cohort] {
                    let got = store.search(q, 5, rule, scoring).unwrap().unwrap();
                    assert_eq!(got.len(), 5, "{rule:?}");
                    assert!(got.iter().all(|m| m.identity != "intruder"), "{got:?}");
                }
            }
        }
        // The plan reads the partial index of this gallery.
        let g = store.gallery;
        let plan: Vec<String> = store
            .run(|mut c| async move {
                let tx = c.transaction().await?;
                tx.batch_execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
                    .await?;
                let rows = tx
                    .query(
                        &format!(
                            "EXPLAIN SELECT id FROM faces WHERE gallery_id = {g}
                             ORDER BY embedding::vector(128) <-> $1 LIMIT 10"
                        ),
                        &[&Vector::from(vec![0.1f32; 128])],
                    )
                    .await?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            })
            .unwrap();
        assert!(
            plan.iter().any(|l| l.contains(&format!("faces_hnsw_{g}"))),
            "{plan:#?}"
        );
        // The cohort search reads the faces' index for its candidates and for each
        // candidate's neighbours (the lateral query), once the planner knows the gallery's
        // size (autovacuum's ANALYZE, here at once). The 300 centroids are scanned: cheaper
        // at that size, as the planner rightly finds.
        let plan: Vec<String> = store
            .run(|mut c| async move {
                let tx = c.transaction().await?;
                tx.batch_execute("ANALYZE faces; SET LOCAL hnsw.iterative_scan = strict_order")
                    .await?;
                let sql = cohort_sql(g, GalleryRule::NearestSample, Some(128));
                let rows = tx
                    .query(
                        &format!("EXPLAIN {sql}"),
                        &[&Vector::from(vec![0.1f32; 128])],
                    )
                    .await?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            })
            .unwrap();
        let index = format!("faces_hnsw_{g}");
        let scans = plan.iter().filter(|l| l.contains(index.as_str())).count();
        assert_eq!(scans, 2, "{plan:#?}");
        // A face enrolled after the build is in the index at once.
        let probe = l2(&[0.3; 128]);
        let new = NewFace {
            embedding: probe.clone(),
            source: "late.jpg".into(),
            bbox: None,
        };
        store.enroll("latecomer", &[new], &m).unwrap();
        for rule in [GalleryRule::Centroid, GalleryRule::NearestSample] {
            let top = &store
                .search(&probe, 1, rule, Scoring::Distance)
                .unwrap()
                .unwrap()[0];
            assert_eq!(top.identity, "latecomer");
            assert!(top.distance < 1e-3, "{top:?}");
        }
        let e = PostgresGallery::connect(&fresh_db())
            .unwrap()
            .set_index(Some(HnswParams::default()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no faces yet"), "{e}");
        let bad = HnswParams {
            m: 40,
            ef_construction: 50,
            ef_search: 10,
        };
        let e = store.set_index(Some(bad)).unwrap_err().to_string();
        assert!(e.contains("ef_construction 50"), "{e}");
        store.set_index(None).unwrap();
        assert_eq!(store.index().unwrap(), None);
        let left: i64 = store
            .run(|c| async move {
                Ok(c.query_one(
                    "SELECT COUNT(*) FROM pg_indexes WHERE indexname LIKE 'faces_hnsw_%'",
                    &[],
                )
                .await?
                .get(0))
            })
            .unwrap();
        assert_eq!(left, 1, "only the other gallery's index is left");
        other.delete_gallery().unwrap();
        assert_eq!(
            store.galleries().unwrap(),
            vec![DEFAULT_GALLERY.to_string()]
        );
    }

    /// An export from SQLite imported into PostgreSQL and exported again, then imported into
    /// a new SQLite gallery: every identity (one without faces too), every face (embedding bit
    /// for bit, source, box, time of enrolment) and the settings come through unchanged. An
    /// import under another model adds nothing.
    #[test]
    #[ignore = "needs PostgreSQL with pgvector (FACENET_TEST_PG); .ci/run starts one and runs `cargo test -- --ignored postgres_`"]
    fn postgres_export_import_round_trips_bit_exactly() {
        use crate::{Export, SqliteGallery};
        let src = SqliteGallery::in_memory().unwrap();
        let m = ModelInfo {
            fingerprint: "c".repeat(64),
            dim: 128,
        };
        let fl = crate::synthetic::face_like(4, 3, 0, 128, 5);
        for (i, row) in fl.gallery.chunks_exact(128).enumerate() {
            let new = NewFace {
                // Values that need all of an f32's digits.
                embedding: row.iter().map(|v| v * (1.0 + f32::EPSILON)).collect(),
                source: format!("photos/p{}/{i}.jpg", fl.labels[i]),
                bbox: (i % 2 == 0).then_some([1.5, 2.25, 100.125, 200.0625]),
            };
            src.enroll(&format!("person {}", fl.labels[i]), &[new], &m)
                .unwrap();
        }
        src.create_identity("nobody yet").unwrap();
        src.set_settings(&Settings {
            threshold: Some(0.8123),
            target_fir: Some(0.005),
            impostor: None,
            cohort: None,
        })
        .unwrap();
        let strip = |mut e: Export| {
            e.faces.iter_mut().for_each(|f| f.id = 0);
            e
        };
        let first = Export::of(&src).unwrap();
        let text = serde_json::to_string(&first).unwrap();
        let pg = PostgresGallery::connect(&fresh_db()).unwrap();
        let back: Export = serde_json::from_str(&text).unwrap();
        assert_eq!(back.import_into(&pg).unwrap(), 12);
        let second = Export::of(&pg).unwrap();
        assert_eq!(strip(second.clone()), strip(first.clone()));
        let dst = SqliteGallery::in_memory().unwrap();
        let text = serde_json::to_string(&second).unwrap();
        serde_json::from_str::<Export>(&text)
            .unwrap()
            .import_into(&dst)
            .unwrap();
        assert_eq!(strip(Export::of(&dst).unwrap()), strip(first.clone()));
        // Under another model nothing is added, not even the identities.
        let other = pg.open_gallery("other").unwrap();
        let m2 = ModelInfo {
            fingerprint: "d".repeat(64),
            dim: 128,
        };
        let one = NewFace {
            embedding: l2(&[1.0; 128]),
            source: "x".into(),
            bbox: None,
        };
        other.enroll("x", &[one], &m2).unwrap();
        let e = first.import_into(&other).unwrap_err();
        assert!(matches!(e, GalleryError::ModelMismatch { .. }), "{e}");
        assert_eq!(other.identities().unwrap(), vec![("x".to_string(), 1)]);
    }

    fn l2(v: &[f32]) -> Vec<f32> {
        facenet::embed::l2_normalize(v)
    }

    /// Embeddings go through pgvector and come back bit for bit; the schema is applied once
    /// by concurrent instances; a newer schema is refused; a wrong host is named.
    #[test]
    #[ignore = "needs PostgreSQL with pgvector (FACENET_TEST_PG); .ci/run starts one and runs `cargo test -- --ignored postgres_`"]
    fn postgres_schema_embeddings_and_errors() {
        let url = fresh_db();
        let instances: Vec<PostgresGallery> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| PostgresGallery::connect(&url).unwrap()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let v: Vec<f32> = (0..128).map(|i| ((i as f32) * 0.37).sin() / 8.0).collect();
        let m = ModelInfo {
            fingerprint: "f".repeat(64),
            dim: 128,
        };
        let new = NewFace {
            embedding: v.clone(),
            source: "x.jpg".into(),
            bbox: None,
        };
        instances[0].enroll("ada", &[new], &m).unwrap();
        let back = instances[3].faces(Some("ada")).unwrap();
        assert_eq!(back[0].embedding, v, "bit for bit");
        assert_eq!(back[0].bbox, None);
        instances[1]
            .run(|c| async move {
                c.execute("UPDATE facenet_schema SET version = 99", &[])
                    .await?;
                Ok(())
            })
            .unwrap();
        let e = PostgresGallery::connect(&url).unwrap_err().to_string();
        assert!(e.contains("schema version 99"), "{e}");
        let e = PostgresGallery::connect("postgres://facenet@127.0.0.1:1/nothing").unwrap_err();
        let text = format!(
            "{e}: {}",
            e.source().map(|s| s.to_string()).unwrap_or_default()
        );
        assert!(text.contains("127.0.0.1:1"), "{text}");
        let e = PostgresGallery::connect("postgres://nohost.invalid/db").unwrap_err();
        let text = format!(
            "{e}: {}",
            e.source().map(|s| s.to_string()).unwrap_or_default()
        );
        assert!(text.contains("nohost.invalid"), "{text}");
    }
}
