//! `facenet library`: a photo collection's faces, grouped into people (on
//! `facenet_gallery::library::Library`, in the gallery's file).

use anyhow::{Context, bail};
use facenet::Device;
use facenet_gallery::library::{Library, ScoredRun};

use crate::common::{PhaseBar, bar};

mod args;

pub use args::{LibraryCmd, LibrarySub};

pub fn run(args: LibraryCmd, device: Device) -> anyhow::Result<()> {
    let file = args.gallery.path();
    let recognizer = args.gallery.recognizer(&args.pipeline, true, &device)?;
    if args.pipeline.aligned {
        bail!("--aligned: a library indexes whole photos (it finds every face itself)");
    }
    let lib = Library::open(
        &file.to_string_lossy(),
        &args.gallery.gallery_name,
        recognizer,
    )
    .with_context(|| {
        format!(
            "opening the library in {}",
            facenet_gallery::redact(&file.to_string_lossy())
        )
    })?;
    match args.command {
        LibrarySub::Add { paths, json } => {
            let pool = args
                .pipeline
                .detector
                .pool(&device, false)?
                .context("a detector")?;
            let pb = PhaseBar(bar(0, "{msg:8} {wide_bar} {pos}/{len} {per_sec} ETA {eta}"));
            let r = lib.add(&paths, &pool, &pb)?;
            pb.0.finish_and_clear();
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{} photo(s) indexed ({} face(s)) in {:.1} s, {} unchanged, {} moved, {} copies skipped, {} removed",
                    r.photos, r.faces, r.indexing_s, r.unchanged, r.moved, r.copies, r.removed
                );
                println!(
                    "people: {} face(s) joined someone, {} new person(s)",
                    r.joined, r.new_people
                );
                for (p, why) in &r.unreadable {
                    eprintln!("skipped {}: {why}", p.display());
                }
                if r.files == 0 {
                    let looked: Vec<String> =
                        paths.iter().map(|p| p.display().to_string()).collect();
                    eprintln!(
                        "note: no photos in {}: no .{} file there or in any folder below",
                        looked.join(", "),
                        facenet::files::IMAGE_EXTENSIONS.join(", .")
                    );
                }
            }
        }
        LibrarySub::People { json } => {
            let people = lib.people()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&people)?);
            } else {
                let [photos, failed, faces, n, named] = lib.db().counts()?;
                println!(
                    "{photos} photos ({failed} unreadable), {faces} faces, {n} people ({named} named) in {}",
                    lib.db().location()
                );
                for p in people {
                    println!(
                        "{:>8}  {:>5} faces  {:>5} photos",
                        p.label(),
                        p.faces,
                        p.photos
                    );
                }
            }
        }
        LibrarySub::Faces { person, json } => {
            let faces = lib.faces_of(&person)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&faces)?);
            } else {
                for f in faces {
                    println!(
                        "{:>7}  q={:.2}{}  {} #{}",
                        f.id,
                        f.quality,
                        if f.pinned { " (placed)" } else { "" },
                        f.path,
                        f.index
                    );
                }
            }
        }
        LibrarySub::Name { person, name } => {
            let p = lib.name(&person, &name)?;
            println!(
                "#{} is {name}: {} face(s) in {} photo(s); `facenet identify` knows them",
                p.id, p.faces, p.photos
            );
        }
        LibrarySub::Merge { into, others } => {
            let p = lib.merge(&into, &others)?;
            println!(
                "{}: {} face(s) in {} photo(s)",
                p.label(),
                p.faces,
                p.photos
            );
        }
        LibrarySub::Move { face, to, nobody } => {
            match lib.move_face(face, if nobody { None } else { to.as_deref() })? {
                Some(p) => println!("face {face} -> {} ({} face(s))", p.label(), p.faces),
                None => println!("face {face} -> no one"),
            }
        }
        LibrarySub::Forget { person } => {
            let n = lib.forget(&person)?;
            println!("forgot {person}: {n} face(s) erased");
        }
        LibrarySub::Recluster => {
            let r = lib.recluster()?;
            println!(
                "{} face(s) joined someone, {} new person(s); {} with a person, {} alone",
                r.joined, r.new_people, r.assigned, r.unassigned
            );
        }
        LibrarySub::Find {
            person,
            face,
            limit,
            json,
        } => {
            if let Some(probe) = face {
                let f = lib
                    .recognizer()
                    .pipeline()
                    .face_in_file(&probe, facenet::pipeline::FaceChoice::Primary)?;
                let hits = lib.find_face(&f.embedding, limit)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&hits)?);
                } else {
                    for h in hits {
                        println!(
                            "{:.3}  {}  {}",
                            h.distance,
                            h.path,
                            h.person.unwrap_or_else(|| "-".into())
                        );
                    }
                }
            } else {
                let photos = lib.find_people(&person)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&photos)?);
                } else {
                    for p in photos.iter().take(limit) {
                        println!("{}", p.path);
                    }
                }
            }
        }
        LibrarySub::Sheet {
            person,
            output,
            max,
        } => {
            let p = lib.person(&person)?;
            let faces = lib.faces_of(&person)?;
            let crops = faces
                .iter()
                .take(max)
                .map(|f| lib.thumbnail(f, 160))
                .collect::<Result<Vec<_>, _>>()?;
            let tiles: Vec<_> = faces
                .iter()
                .zip(&crops)
                .map(|(f, crop)| facenet_plot::Tile {
                    face: crop,
                    title: format!("face {}", f.id),
                    subtitle: format!(
                        "q={:.2} {}",
                        f.quality,
                        std::path::Path::new(&f.path)
                            .file_stem()
                            .map(|n| {
                                // The end of the name (where photo numbers are).
                                let n: Vec<char> = n.to_string_lossy().chars().collect();
                                match n.len() > 14 {
                                    true => {
                                        format!("…{}", n[n.len() - 13..].iter().collect::<String>())
                                    }
                                    false => n.iter().collect(),
                                }
                            })
                            .unwrap_or_default()
                    ),
                    ok: true,
                })
                .collect();
            facenet_plot::contact_sheet(&output, &tiles)?;
            println!(
                "{} face(s) of {}: {}",
                tiles.len(),
                p.label(),
                output.display()
            );
        }
        LibrarySub::Evaluate {
            batches,
            json,
            join,
            found,
            votes,
            centroid,
            merge,
        } => {
            let mut rule = lib.rule();
            rule.centroid = centroid.unwrap_or(rule.centroid);
            rule.merge = merge.unwrap_or(rule.merge);
            for (flag, value) in [("--centroid", rule.centroid), ("--merge", rule.merge)] {
                if !(0.0..=2.0).contains(&value) {
                    bail!("{flag} is an L2 distance between unit embeddings, in [0, 2]");
                }
            }
            rule.threshold = join.unwrap_or(rule.threshold);
            rule.found = found.unwrap_or(rule.found);
            rule.votes = votes.unwrap_or(rule.votes);
            if !(rule.threshold > 0.0
                && rule.threshold <= 2.0
                && rule.found > 0.0
                && rule.found <= 2.0)
            {
                bail!("--join and --found are L2 distances between unit embeddings, in (0, 2]");
            }
            if rule.votes == 0 {
                bail!("--votes: at least 1");
            }
            let lib = lib.with_rule(rule);
            let truth = |path: &str| {
                std::path::Path::new(path)
                    .parent()
                    .and_then(|d| d.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
            };
            let rule = lib.rule();
            let runs = lib.evaluate(truth, batches)?;
            println!(
                "join below {:.3} ({} votes, or a centroid below {:.3}), found below {:.3}, at least {} faces, merge new people below {:.3}",
                rule.threshold, rule.votes, rule.centroid, rule.found, rule.min_faces, rule.merge
            );
            print_table(&runs);
            if let Some(path) = json {
                facenet::files::write_json_atomic(
                    &path,
                    &serde_json::json!({"rule": rule, "runs": runs}),
                )?;
            }
        }
    }
    Ok(())
}

fn print_table(runs: &[ScoredRun]) {
    println!(
        "| run | faces | people | BCubed P | BCubed R | F | merged | split | clusters |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in runs {
        let s = &r.score;
        println!(
            "| {} | {} | {} | {:.4} | {:.4} | {:.4} | {} | {} | {} |",
            r.run, s.faces, s.people, s.precision, s.recall, s.f, s.merged, s.split, s.clusters
        );
    }
}
