//! `facenet bench search`: gallery search over face-like unit vectors, exact and HNSW, in
//! memory and in a store.

use anyhow::Context;

/// Arguments of `facenet bench search`.
#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    /// Gallery sizes for exact search, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    pub sizes: Vec<usize>,
    /// Gallery sizes for the HNSW index (build time, query time, recall@1 against exact).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    pub ann_sizes: Vec<usize>,
    /// Queries per size.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// Search inside this PostgreSQL database instead (postgres://USER@HOST:PORT/DB): each
    /// size in a scratch gallery, deleted afterwards; exact search under both rules, then the
    /// HNSW index at the --ann-sizes.
    #[arg(long)]
    pub store: Option<String>,
    /// The index's ef_search with --store.
    #[arg(long, default_value_t = facenet_gallery::HnswParams::default().ef_search)]
    pub ef_search: u32,
}

/// Face-like synthetic galleries (10 faces per identity, see `facenet_gallery::synthetic`):
/// exact search on one core, then the HNSW graph.
pub(super) fn search_bench(args: &SearchArgs) -> anyhow::Result<()> {
    let threads = rayon::current_num_threads();
    if args.sizes.iter().chain(&args.ann_sizes).any(|&n| n == 0) {
        anyhow::bail!("--sizes and --ann-sizes: a gallery size must be at least 1");
    }
    let mut sizes: Vec<usize> = args.sizes.iter().chain(&args.ann_sizes).copied().collect();
    sizes.sort_unstable();
    sizes.dedup();
    if let Some(url) = &args.store {
        return store_search_bench(args, url, &sizes);
    }
    for n in sizes {
        let hnsw = args.ann_sizes.contains(&n);
        let r = facenet_gallery::synthetic::search_bench(n, args.queries, hnsw, threads)?;
        if args.sizes.contains(&n) {
            let ms = r.exact_ms;
            println!("search n={n} dim=128 ms_per_query={ms:.3} threads=1 kind=exact");
        }
        if let Some((list_s, ms, update_ms)) = r.cohort {
            println!(
                "search n={n} dim=128 ms_per_query={ms:.3} threads=1 kind=exact-cohort \
                 lists_s={list_s:.2} list_threads={threads} update_ms={update_ms:.1}"
            );
        }
        if let Some((ms, build_s, recall)) = r.hnsw {
            println!(
                "search n={n} dim=128 ms_per_query={ms:.3} threads=1 kind=hnsw build_s={build_s:.1} \
                 build_threads={threads} recall_at_1={recall:.4} speedup={:.1}",
                r.exact_ms / ms
            );
        }
    }
    Ok(())
}

/// `bench search --store`: search inside a PostgreSQL database, a scratch gallery per size.
fn store_search_bench(args: &SearchArgs, url: &str, sizes: &[usize]) -> anyhow::Result<()> {
    let store = facenet_gallery::postgres::PostgresGallery::connect(url)
        .context("connecting to the benchmark's database")?;
    for &n in sizes {
        let name = format!("bench-search-{n}-{}", std::process::id());
        let g = store.open_gallery(&name)?;
        let hnsw = args
            .ann_sizes
            .contains(&n)
            .then_some(facenet_gallery::HnswParams {
                ef_search: args.ef_search,
                ..Default::default()
            });
        let r =
            facenet_gallery::synthetic::store_search_bench(&g, n, args.queries, hnsw, &|step| {
                eprintln!("n={n}: {step}")
            });
        g.delete_gallery()?;
        let r = r?;
        for line in r.lines(args.ef_search) {
            println!("{line}");
        }
    }
    Ok(())
}
