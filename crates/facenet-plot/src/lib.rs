//! Plots and contact sheets (plotters, bitmap backend, an embedded font): the ROC and
//! distance histograms of an evaluation, a 2-D projection of embeddings, a grid of identified
//! faces. Every front draws through here.
//!
//! ```text
//! facenet evaluate --pairs pairs.txt --images lfw/ --out report/   # roc.png, distances.png
//! ```
#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Once;

use facenet::Distance;
use facenet::eval::Evaluation;
use plotters::coord::combinators::LogCoord;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// Registers the embedded font as "sans-serif" (once).
pub fn fonts() {
    REGISTER.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Errors of drawing.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The drawing backend failed (its errors are generic over the backend; kept as text).
    #[error("drawing {path}: {detail}")]
    Draw {
        /// The output file.
        path: PathBuf,
        /// The backend's error.
        detail: String,
    },
    /// The image could not be written.
    #[error("writing {path}")]
    Write {
        /// The output file.
        path: PathBuf,
        /// The encoder's error.
        #[source]
        source: image::ImageError,
    },
}

/// Result alias of drawing.
pub type Result<T, E = PlotError> = std::result::Result<T, E>;

fn err<E: std::fmt::Debug>(path: &Path) -> impl Fn(E) -> PlotError + '_ {
    move |e| PlotError::Draw {
        path: path.into(),
        detail: format!("{e:?}"),
    }
}

/// The smallest rate a log-scale rate axis shows.
const MIN_RATE: f64 = 1e-4;

/// A chart of a rate on a log axis (`MIN_RATE` to 1) against a rate from 0 to 1.
type RateChart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<LogCoord<f64>, RangedCoordf64>>;

/// Draws an 800x600 [`RateChart`] with its caption and axis names, lets `draw` add the series,
/// then the legend (lower right).
fn rate_plot(
    path: &Path,
    caption: &str,
    axes: (&str, &str),
    draw: impl FnOnce(&mut RateChart<'_, '_>) -> Result<()>,
) -> Result<()> {
    log_x_plot(
        path,
        caption,
        axes,
        ((MIN_RATE, 1.0), (0.0, 1.0), SeriesLabelPosition::LowerRight),
        draw,
    )
}

/// [`rate_plot`] with the ranges of the log x axis and the linear y axis and the legend's
/// place given.
fn log_x_plot(
    path: &Path,
    caption: &str,
    (x_desc, y_desc): (&str, &str),
    ((x0, x1), (y0, y1), legend): ((f64, f64), (f64, f64), SeriesLabelPosition),
    draw: impl FnOnce(&mut RateChart<'_, '_>) -> Result<()>,
) -> Result<()> {
    fonts();
    let root = BitMapBackend::new(path, (800, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err(path))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((x0..x1).log_scale(), y0..y1)
        .map_err(err(path))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(err(path))?;
    draw(&mut chart)?;
    chart
        .configure_series_labels()
        .position(legend)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err(path))?;
    root.present().map_err(err(path))
}

/// ROC curve with a log-scale FAR axis, the threshold at the target FAR marked.
pub fn roc(path: &Path, e: &Evaluation, metric: Distance) -> Result<()> {
    let caption = format!(
        "ROC  (AUC {:.4}, EER {:.4}, accuracy {:.4})",
        e.auc, e.eer, e.accuracy
    );
    let axes = ("false accept rate (log scale)", "true accept rate");
    rate_plot(path, &caption, axes, |chart| {
        let min_far = MIN_RATE;
        let pts: Vec<(f64, f64)> = e.roc.iter().map(|p| (p.far.max(min_far), p.tar)).collect();
        chart
            .draw_series(LineSeries::new(pts, BLUE.stroke_width(2)))
            .map_err(err(path))?
            .label("ROC over all pairs")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        let mark = (e.far_target.max(min_far), e.tar_at_far);
        chart
            .draw_series(std::iter::once(Circle::new(mark, 6, RED.filled())))
            .map_err(err(path))?
            .label(format!(
                "threshold {:.3} ({}): TAR {:.4} at FAR {}",
                e.threshold_at_far,
                short_unit(metric),
                e.tar_at_far,
                e.far_target
            ))
            .legend(|(x, y)| Circle::new((x + 10, y), 5, RED.filled()));
        Ok(())
    })
}

/// Open-set identification: DIR against FIR (log scale) as the threshold moves, the points
/// at each target FIR marked, and the thresholds an impostor table derives for them.
pub fn open_set(path: &Path, r: &facenet::eval::openset::OpenSetReport) -> Result<()> {
    let caption = format!(
        "Open-set identification: {} identities, {} strangers",
        r.identities, r.strangers
    );
    let axes = (
        "false identification rate: strangers named as someone (log scale)",
        "detection and identification rate",
    );
    rate_plot(path, &caption, axes, |chart| {
        let min_fir = MIN_RATE;
        let pts: Vec<(f64, f64)> = r
            .curve
            .iter()
            .filter(|p| p.fir > 0.0)
            .map(|p| (p.fir.max(min_fir), p.dir))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, BLUE.stroke_width(2)))
            .map_err(err(path))?
            .label(format!(
                "{:?}, {} photo(s) per person",
                r.rule, r.per_person
            ))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        let marks = |rows: &[(f64, facenet::eval::openset::OpenSetPoint)]| -> Vec<(f64, f64)> {
            rows.iter()
                .map(|(_, p)| (p.fir.max(min_fir), p.dir))
                .collect()
        };
        chart
            .draw_series(
                marks(&r.at_fir)
                    .into_iter()
                    .map(|m| Circle::new(m, 5, RED.filled())),
            )
            .map_err(err(path))?
            .label("threshold set on these strangers (FIR 1e-1, 1e-2, 1e-3)")
            .legend(|(x, y)| Circle::new((x + 10, y), 5, RED.filled()));
        if !r.derived.is_empty() {
            chart
                .draw_series(
                    marks(&r.derived)
                        .into_iter()
                        .map(|m| TriangleMarker::new(m, 7, GREEN.filled())),
                )
                .map_err(err(path))?
                .label("threshold derived from the impostor table and the gallery's size")
                .legend(|(x, y)| TriangleMarker::new((x + 10, y), 6, GREEN.filled()));
        }
        Ok(())
    })
}

fn short_unit(metric: Distance) -> &'static str {
    match metric {
        Distance::L2 => "L2",
        Distance::SquaredL2 => "squared L2",
        Distance::Cosine => "cosine",
    }
}

/// Histograms of same-person and different-person distances, with the threshold.
pub fn distances(
    path: &Path,
    dist: &[f64],
    same: &[bool],
    threshold: f64,
    metric: Distance,
) -> Result<()> {
    fonts();
    let max = dist.iter().cloned().fold(0.0, f64::max).max(threshold) * 1.05;
    let bins = 60usize;
    let w = max / bins as f64;
    let hist = |want: bool| {
        let mut h = vec![0u32; bins];
        for (d, s) in dist.iter().zip(same) {
            if *s == want {
                h[((d / w) as usize).min(bins - 1)] += 1;
            }
        }
        h
    };
    let (hs, hd) = (hist(true), hist(false));
    let top = hs.iter().chain(&hd).copied().max().unwrap_or(1) as f64 * 1.1;
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(err(path))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Distances of same and different people", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..max, 0.0..top)
        .map_err(err(path))?;
    chart
        .configure_mesh()
        .x_desc(format!("{} distance", short_unit(metric)))
        .y_desc("pairs")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(err(path))?;
    for (h, color, label) in [(&hs, GREEN, "same person"), (&hd, RED, "different people")] {
        chart
            .draw_series(h.iter().enumerate().map(|(i, &n)| {
                let x0 = i as f64 * w;
                Rectangle::new([(x0, 0.0), (x0 + w, n as f64)], color.mix(0.45).filled())
            }))
            .map_err(err(path))?
            .label(label)
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.mix(0.45).filled())
            });
    }
    chart
        .draw_series(LineSeries::new(
            vec![(threshold, 0.0), (threshold, top)],
            BLACK.stroke_width(2),
        ))
        .map_err(err(path))?
        .label(format!("threshold {threshold:.3}"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err(path))?;
    root.present().map_err(err(path))?;
    Ok(())
}

/// Validation accuracy of training runs, side by side against steps and against training
/// minutes (one colour per run, named in the legend); a dashed line at `goal` if given.
pub fn training_curves(
    path: &Path,
    runs: &[(String, Vec<facenet_train::CurvePoint>)],
    goal: Option<f64>,
) -> Result<()> {
    fonts();
    let root = BitMapBackend::new(path, (1400, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err(path))?;
    let points = || runs.iter().flat_map(|(_, p)| p.iter());
    let lo = points()
        .map(|p| p.val_accuracy)
        .chain(goal)
        .fold(1.0, f64::min)
        .clamp(0.0, 0.5);
    let hi = points()
        .map(|p| p.val_accuracy)
        .chain(goal)
        .fold(0.0, f64::max)
        .min(1.0);
    // Round to 0.05, with room above the highest line.
    let (lo, hi) = (
        (lo * 20.0).floor() / 20.0,
        (((hi + 0.02) * 20.0).ceil() / 20.0).clamp(lo + 0.05, 1.0),
    );
    let max_step = points().map(|p| p.step).max().unwrap_or(1).max(1) as f64;
    let max_min = points()
        .map(|p| p.train_seconds / 60.0)
        .fold(0.0, f64::max)
        .max(1.0);
    let halves = root.split_evenly((1, 2));
    let axes = [("optimizer steps", max_step), ("training minutes", max_min)];
    for (area, (x_desc, x_max)) in halves.iter().zip(axes) {
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("Validation accuracy against {x_desc}"),
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max * 1.02, lo..hi)
            .map_err(err(path))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .x_label_formatter(&|x| {
                if x_max < 10.0 {
                    format!("{x:.1}")
                } else {
                    format!("{x:.0}")
                }
            })
            .y_desc("accuracy on the validation pairs")
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(err(path))?;
        if let Some(g) = goal {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(0.0, g), (x_max * 1.02, g)],
                    8,
                    5,
                    BLACK.stroke_width(1),
                ))
                .map_err(err(path))?
                .label(format!("goal {g}"))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        }
        for (i, (name, pts)) in runs.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let xy: Vec<(f64, f64)> = pts
                .iter()
                .map(|p| {
                    let x = if x_desc == "optimizer steps" {
                        p.step as f64
                    } else {
                        p.train_seconds / 60.0
                    };
                    (x, p.val_accuracy)
                })
                .collect();
            chart
                .draw_series(LineSeries::new(xy, color.stroke_width(2)))
                .map_err(err(path))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err(path))?;
    }
    root.present().map_err(err(path))
}

/// A 2-D scatter, one colour per label, with a legend of `names`.
pub fn scatter(
    path: &Path,
    title: &str,
    xy: &[(f64, f64)],
    labels: &[usize],
    names: &[String],
) -> Result<()> {
    fonts();
    let root = BitMapBackend::new(path, (900, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(err(path))?;
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in xy {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    let pad = |a: f64, b: f64| ((b - a) * 0.05).max(1e-6);
    let (px, py) = (pad(x0, x1), pad(y0, y1));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(x0 - px..x1 + px + (x1 - x0) * 0.45, y0 - py..y1 + py)
        .map_err(err(path))?;
    chart
        .configure_mesh()
        .x_desc("first principal component")
        .y_desc("second principal component")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err(path))?;
    for (l, name) in names.iter().enumerate() {
        let colour = Palette99::pick(l).to_rgba();
        let pts: Vec<(f64, f64)> = xy
            .iter()
            .zip(labels)
            .filter(|(_, lab)| **lab == l)
            .map(|(p, _)| *p)
            .collect();
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 5, colour.filled())))
            .map_err(err(path))?
            .label(name.as_str())
            .legend(move |(x, y)| Circle::new((x + 8, y), 5, colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(err(path))?;
    root.present().map_err(err(path))?;
    Ok(())
}

/// One face of a contact sheet.
#[derive(Debug, Clone)]
pub struct Tile<'a> {
    /// The aligned face (160x160).
    pub face: &'a image::RgbImage,
    /// First caption line (the prediction).
    pub title: String,
    /// Second caption line (distance, truth).
    pub subtitle: String,
    /// Whether it is right: green caption; else red caption and frame.
    pub ok: bool,
}

/// A grid of faces, five per row, each captioned; wrong ones framed red.
pub fn contact_sheet(path: &Path, tiles: &[Tile<'_>]) -> Result<()> {
    fonts();
    const TILE: u32 = 160;
    const CAPTION: u32 = 40;
    let cols = 5u32;
    let nrows = (tiles.len() as u32).div_ceil(cols).max(1);
    let (w, h) = (cols * TILE, nrows * (TILE + CAPTION));
    let mut canvas = image::RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
    let corner = |i: usize| {
        (
            (i as u32 % cols) * TILE,
            (i as u32 / cols) * (TILE + CAPTION),
        )
    };
    for (i, t) in tiles.iter().enumerate() {
        let (x, y) = corner(i);
        let face = facenet::image::resize_square(t.face, TILE);
        image::imageops::replace(&mut canvas, &face, x as i64, y as i64);
        if !t.ok {
            let b = [
                x as f32,
                y as f32,
                (x + TILE - 1) as f32,
                (y + TILE - 1) as f32,
            ];
            facenet::draw::rect(&mut canvas, b, 4, image::Rgb([220, 0, 0]));
        }
    }
    {
        let mut buf = canvas.as_flat_samples_mut();
        let root = BitMapBackend::with_buffer(buf.as_mut_slice(), (w, h)).into_drawing_area();
        for (i, t) in tiles.iter().enumerate() {
            let (x, y) = corner(i);
            let (x, y) = (x as i32 + 4, (y + TILE) as i32);
            let color = if t.ok {
                RGBColor(0, 110, 0)
            } else {
                RGBColor(200, 0, 0)
            };
            let style = ("sans-serif", 15).into_font().color(&color);
            root.draw_text(&t.title, &style, (x, y + 3))
                .map_err(err(path))?;
            let style = ("sans-serif", 13).into_font().color(&BLACK);
            root.draw_text(&t.subtitle, &style, (x, y + 21))
                .map_err(err(path))?;
        }
        root.present().map_err(err(path))?;
    }
    canvas.save(path).map_err(|source| PlotError::Write {
        path: path.into(),
        source,
    })
}

/// The calibration plot: achieved over target false-identification rate against gallery
/// size, a line per table and target, the band 0.7-1.1 shaded.
pub fn calibration(
    path: &Path,
    reports: &[facenet::eval::openset::CalibrationReport],
) -> Result<()> {
    let max_n = reports
        .iter()
        .flat_map(|r| r.points.iter().map(|p| p.identities))
        .max()
        .unwrap_or(10)
        .max(20) as f64;
    let caption = "Derived thresholds: achieved / target false-identification rate";
    let axes = (
        "identities in the gallery (log scale)",
        "achieved FIR / target FIR",
    );
    let ranges = (
        (5.0, max_n * 2.0),
        (0.0, 2.6),
        SeriesLabelPosition::UpperRight,
    );
    log_x_plot(path, caption, axes, ranges, |chart| {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(5.0, 0.7), (max_n * 2.0, 1.1)],
                GREEN.mix(0.15).filled(),
            )))
            .map_err(err(path))?
            .label("goal: 0.7 to 1.1")
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 5), (x + 20, y + 5)], GREEN.mix(0.3).filled())
            });
        // One colour per target; the cohort score's reports bold, the held-out tables pale.
        let colours = [BLUE, RED, MAGENTA, CYAN, BLACK, GREEN];
        let mut all_targets: Vec<f64> = reports
            .iter()
            .flat_map(|r| r.points.iter().map(|p| p.target))
            .collect();
        all_targets.sort_by(f64::total_cmp);
        all_targets.dedup();
        for r in reports {
            let mut targets: Vec<f64> = r.points.iter().map(|p| p.target).collect();
            targets.sort_by(f64::total_cmp);
            targets.dedup();
            let cohort = r.what.starts_with("cohort score");
            let held_out = r.what.contains("half of the people");
            let which = format!(
                "{}, {}",
                if cohort { "cohort score" } else { "distance" },
                if held_out {
                    "held-out half"
                } else {
                    "table in use"
                }
            );
            for t in targets {
                let at = all_targets.iter().position(|&x| x == t).unwrap_or(0);
                let colour = colours[at % colours.len()];
                let pts: Vec<(f64, f64)> = r
                    .points
                    .iter()
                    .filter(|p| p.target == t)
                    .map(|p| (p.identities as f64, p.ratio().min(2.0)))
                    .collect();
                let style = colour
                    .mix(if held_out { 0.35 } else { 1.0 })
                    .stroke_width(if cohort { 3 } else { 1 });
                chart
                    .draw_series(LineSeries::new(pts.clone(), style))
                    .map_err(err(path))?
                    .label(format!("target {t}, {which}"))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
                chart
                    .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, colour.filled())))
                    .map_err(err(path))?;
            }
        }
        Ok(())
    })
}
