//! The SVG training report: a confusion matrix, per-class precision, recall and F1, and the
//! reliability diagram (test accuracy against confidence, before and after calibration).

use std::path::Path;

use plotters::prelude::*;

use super::metrics::{CalibrationReport, Metrics};

/// Draws `metrics` of `title` to an SVG file.
pub fn write_svg(path: &Path, title: &str, metrics: &Metrics) -> anyhow::Result<()> {
    let k = metrics.classes.len().max(1);
    let height = 360 + 28 * k as u32;
    let width = if metrics.calibration.is_some() {
        1560
    } else {
        1100
    };
    let root = SVGBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let root = root
        .titled(
            &format!(
                "{title} — macro F1 {:.3}, accuracy {:.3}, {} test samples",
                metrics.macro_f1, metrics.accuracy, metrics.samples
            ),
            ("sans-serif", 20),
        )
        .map_err(plot_error)?;
    let (left, rest) = root.split_horizontally(540);
    let (right, last) = rest.split_horizontally(560);
    let names: Vec<String> = metrics
        .classes
        .iter()
        .map(|c| c.class.chars().take(24).collect())
        .collect();
    confusion(&left, metrics, &names)?;
    per_class(&right, metrics, &names)?;
    if let Some(c) = &metrics.calibration {
        reliability(&last, c)?;
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// The confusion matrix: rows truth, columns predicted.
fn confusion(area: &Area<'_>, metrics: &Metrics, names: &[String]) -> anyhow::Result<()> {
    let k = metrics.classes.len().max(1);
    let max = metrics
        .confusion
        .iter()
        .flatten()
        .copied()
        .max()
        .unwrap_or(1)
        .max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(
            "confusion (rows: truth, columns: predicted)",
            ("sans-serif", 14),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(160)
        .build_cartesian_2d(0..k, 0..k)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(k)
        .y_labels(k)
        .x_label_formatter(&|x| format!("#{x}"))
        .y_label_formatter(&|y| {
            (k - 1)
                .checked_sub(*y)
                .and_then(|i| names.get(i))
                .cloned()
                .unwrap_or_default()
        })
        .draw()
        .map_err(plot_error)?;
    for (t, row) in metrics.confusion.iter().enumerate() {
        for (p, &n) in row.iter().enumerate() {
            let shade = 255 - (200.0 * n as f64 / max as f64) as u8;
            let y = k - 1 - t;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(p, y), (p + 1, y + 1)],
                    RGBColor(shade, shade, 255).filled(),
                )))
                .map_err(plot_error)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    n.to_string(),
                    (p, y + 1),
                    ("sans-serif", 14),
                )))
                .map_err(plot_error)?;
        }
    }
    Ok(())
}

/// Precision, recall and F1 of each class, as bars.
fn per_class(area: &Area<'_>, metrics: &Metrics, names: &[String]) -> anyhow::Result<()> {
    let k = metrics.classes.len().max(1);
    let mut bars = ChartBuilder::on(area)
        .caption("precision / recall / F1 per class", ("sans-serif", 14))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(160)
        .build_cartesian_2d(0.0..1.0, 0..(k * 3))
        .map_err(plot_error)?;
    bars.configure_mesh()
        .disable_y_mesh()
        .y_labels(k)
        .y_label_formatter(&|y| {
            if y % 3 == 1 {
                (k - 1)
                    .checked_sub(y / 3)
                    .and_then(|i| names.get(i))
                    .cloned()
                    .unwrap_or_default()
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(plot_error)?;
    let colors = [BLUE, GREEN, RED];
    for (i, c) in metrics.classes.iter().enumerate() {
        let base = (k - 1 - i) * 3;
        for (j, (value, color)) in [c.precision, c.recall, c.f1].iter().zip(colors).enumerate() {
            bars.draw_series(std::iter::once(Rectangle::new(
                [(0.0, base + j), (*value, base + j + 1)],
                color.mix(0.6).filled(),
            )))
            .map_err(plot_error)?;
        }
    }
    Ok(())
}

/// The reliability diagram: per confidence bin, test accuracy against mean confidence, for
/// the raw and the calibrated probabilities; the diagonal is perfect calibration.
fn reliability(area: &Area<'_>, c: &CalibrationReport) -> anyhow::Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption(c), ("sans-serif", 14))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(0.0..1.0, 0.0..1.0)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("confidence")
        .y_desc("accuracy")
        .draw()
        .map_err(plot_error)?;
    chart
        .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.3)))
        .map_err(plot_error)?;
    for (bins, color, name) in [(&c.before, RED, "raw"), (&c.after, BLUE, "calibrated")] {
        let points: Vec<(f64, f64)> = bins
            .bins
            .iter()
            .filter(|b| b.count > 0)
            .map(|b| (b.confidence, b.accuracy))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(plot_error)?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
            .map_err(plot_error)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

/// The reliability diagram's title: the ECE before and after, the calibrator, and the ECE
/// a perfectly calibrated model would show on as many test records.
fn caption(c: &CalibrationReport) -> String {
    format!(
        "reliability: ECE {:.3} raw → {:.3} calibrated (T = {:.2}{}){}",
        c.before.ece,
        c.after.ece,
        c.temperature,
        if c.has_top_label() {
            ", top-label map"
        } else {
            ""
        },
        c.noise
            .map(|n| format!("; by chance alone {:.3}", n.mean))
            .unwrap_or_default()
    )
}

fn plot_error<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the SVG report: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::catalogue::Calibration;
    use crate::models::linear::LinearModel;
    use crate::train::calibration::Reliability;

    #[test]
    fn the_caption_names_a_top_label_map_only_when_there_is_one() {
        let probabilities = vec![vec![0.9, 0.1], vec![0.3, 0.7]];
        let reliability = Reliability::of(&probabilities, &[0, 1]);
        let model = LinearModel::fit(
            &[
                crate::features::issue::extract("crash", ""),
                crate::features::issue::extract("feature", ""),
            ],
            &[0, 1],
            &["a".to_string(), "b".to_string()],
            &Default::default(),
        )
        .unwrap();
        let report = |method: String| CalibrationReport {
            method,
            temperature: 1.0,
            before: reliability.clone(),
            after: reliability.clone(),
            noise: None,
        };
        // The method of a model without a map says "no top-label map": no map in the title.
        let without = report(CalibrationReport::method_of(Calibration::Isotonic, &model));
        assert!(without.method.contains("top-label"), "{}", without.method);
        assert!(!caption(&without).contains("map"), "{}", caption(&without));
        let mut mapped = model.clone();
        mapped.top_label = Some(crate::models::calibrator::TopLabelMap {
            x: vec![0.5, 0.9],
            y: vec![0.5, 0.8],
        });
        let with = report(CalibrationReport::method_of(Calibration::Isotonic, &mapped));
        assert!(
            caption(&with).contains("top-label map"),
            "{}",
            caption(&with)
        );
    }
}
