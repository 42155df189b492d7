//! Medians, percentiles, ratios, and the Markdown and SVG the results are
//! written as. Pure functions, so they are the part of the harness under test.

use std::fmt::Write as _;

/// The median of `values` (the mean of the middle two for an even count);
/// `None` for no values. NaNs sort last and so do not pick the median.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

/// The nearest-rank percentile `p` (0 to 100) of already sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    // The epsilon keeps 99.9 % of 1000 at rank 999: in floating point it is
    // 999.0000000000001, which would round up to the next rank.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// `value / floor`, or NaN when the floor is zero or missing, so that a
/// missing reference shows as "n/a" rather than as a misleading number.
pub fn ratio(value: f64, floor: f64) -> f64 {
    if floor == 0.0 || !floor.is_finite() {
        f64::NAN
    } else {
        value / floor
    }
}

/// A ratio as the tables print it: two decimals and a ×, or "n/a".
pub fn fmt_ratio(ratio: f64) -> String {
    if ratio.is_finite() {
        format!("{ratio:.2}×")
    } else {
        "n/a".to_owned()
    }
}

/// A GitHub-flavoured Markdown table; cells are taken as they are, except `|`
/// is escaped so a cell cannot split a row.
pub fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let escape = |cell: &str| cell.replace('|', "\\|");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| {} |",
        header
            .iter()
            .map(|h| escape(h))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
    for row in rows {
        let cells: Vec<String> = row.iter().map(|c| escape(c)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

/// One group of bars in a [`bar_chart`]: a label and `(series, value)` bars.
#[derive(Debug, Clone)]
pub struct BarGroup {
    /// Shown under the group.
    pub label: String,
    /// One bar per series; a non-finite value leaves a gap.
    pub bars: Vec<(String, f64)>,
}

/// Colours for series, in order; repeated past the end.
const PALETTE: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f",
];

/// A grouped bar chart as a standalone SVG document, with a dashed line at
/// `reference` (1.0 for "the floor") when given. Series are coloured by their
/// first appearance, and a legend lists them.
pub fn bar_chart(
    title: &str,
    y_label: &str,
    groups: &[BarGroup],
    reference: Option<f64>,
) -> String {
    let mut series: Vec<&str> = Vec::new();
    for group in groups {
        for (name, _) in &group.bars {
            if !series.contains(&name.as_str()) {
                series.push(name);
            }
        }
    }
    let max = groups
        .iter()
        .flat_map(|g| g.bars.iter().map(|b| b.1))
        .chain(reference)
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let top = nice_ceiling(max);

    let (bar_w, gap, left, plot_h, top_margin) = (14.0, 24.0, 60.0, 260.0, 40.0);
    let group_w = |g: &BarGroup| g.bars.len() as f64 * bar_w;
    let plot_w: f64 = groups.iter().map(|g| group_w(g) + gap).sum::<f64>() + gap;
    let legend_h = 18.0 * series.len() as f64;
    let width = left + plot_w + 20.0;
    let height = top_margin + plot_h + 60.0 + legend_h;
    let y = |v: f64| top_margin + plot_h - (v / top) * plot_h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{:.0}" y="20" font-size="14" text-anchor="middle">{}</text>"#,
        width / 2.0,
        xml_escape(title)
    );
    let _ = writeln!(
        svg,
        r#"<text x="14" y="{:.0}" transform="rotate(-90 14 {:.0})" text-anchor="middle">{}</text>"#,
        top_margin + plot_h / 2.0,
        top_margin + plot_h / 2.0,
        xml_escape(y_label)
    );
    for i in 0..=4 {
        let v = top * i as f64 / 4.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" x2="{:.0}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + plot_w,
            y(v),
            y(v),
            left - 4.0,
            y(v) + 4.0,
            trim_number(v)
        );
    }
    let mut x = left + gap;
    for group in groups {
        for (name, value) in &group.bars {
            if !value.is_finite() {
                x += bar_w;
                continue;
            }
            let colour =
                PALETTE[series.iter().position(|s| s == name).unwrap_or(0) % PALETTE.len()];
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{}: {}</title></rect>"#,
                y(*value),
                bar_w - 1.0,
                (top_margin + plot_h - y(*value)).max(0.0),
                xml_escape(name),
                trim_number(*value)
            );
            x += bar_w;
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.0}" text-anchor="middle">{}</text>"#,
            x - group_w(group) / 2.0,
            top_margin + plot_h + 16.0,
            xml_escape(&group.label)
        );
        x += gap;
    }
    if let Some(reference) = reference.filter(|r| r.is_finite()) {
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" x2="{:.0}" y1="{:.1}" y2="{:.1}" stroke="#333" stroke-dasharray="4 3"/>"##,
            left + plot_w,
            y(reference),
            y(reference)
        );
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{left}" x2="{left}" y1="{top_margin}" y2="{:.0}" stroke="#333"/>"##,
        top_margin + plot_h
    );
    for (i, name) in series.iter().enumerate() {
        let ly = top_margin + plot_h + 36.0 + 18.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{left}" y="{:.0}" width="12" height="12" fill="{}"/><text x="{}" y="{:.0}">{}</text>"#,
            ly - 10.0,
            PALETTE[i % PALETTE.len()],
            left + 18.0,
            ly,
            xml_escape(name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The smallest of 1, 2, 2.5, 5 × 10^k at or above `value` (1 for nothing
/// positive), so axis ticks are round numbers.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&c| c >= value * 0.999_999)
        .unwrap_or(10.0 * magnitude)
}

fn trim_number(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&sorted, 50.0), Some(500));
        assert_eq!(percentile(&sorted, 99.0), Some(990));
        assert_eq!(percentile(&sorted, 99.9), Some(999));
        assert_eq!(percentile(&sorted, 100.0), Some(1000));
        assert_eq!(percentile(&sorted, 0.0), Some(1));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn ratios_to_a_missing_floor_are_not_numbers() {
        assert_eq!(ratio(3.0, 2.0), 1.5);
        assert!(ratio(3.0, 0.0).is_nan());
        assert_eq!(fmt_ratio(1.5), "1.50×");
        assert_eq!(fmt_ratio(f64::NAN), "n/a");
    }

    #[test]
    fn markdown_rows_cannot_be_split_by_a_pipe() {
        let table = markdown_table(&["a", "b"], &[vec!["1|2".into(), "3".into()]]);
        assert_eq!(table, "| a | b |\n|---|---|\n| 1\\|2 | 3 |\n");
    }

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_ceiling(0.93), 1.0);
        assert_eq!(nice_ceiling(1.2), 2.0);
        assert_eq!(nice_ceiling(2.1), 2.5);
        assert_eq!(nice_ceiling(37.0), 50.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
    }

    #[test]
    fn chart_has_a_bar_per_finite_value_and_escapes_labels() {
        let groups = vec![
            BarGroup {
                label: "4 ep <64>".into(),
                bars: vec![("floor".into(), 1.0), ("x&y".into(), 0.5)],
            },
            BarGroup {
                label: "1 ep".into(),
                bars: vec![("floor".into(), 1.0), ("x&y".into(), f64::NAN)],
            },
        ];
        let svg = bar_chart("t", "ratio", &groups, Some(1.0));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<title>").count(), 3);
        assert!(svg.contains("4 ep &lt;64&gt;") && svg.contains("x&amp;y"));
        assert!(svg.contains("stroke-dasharray"));
        assert!(!svg.contains("NaN"));
    }
}
