//! `lumen load --plot FILE.svg`: the run's timeline as two charts over the
//! number of connected viewers: CPU (server and generator, % of one core)
//! and forwarding latency (p50 and p99 of each second, ms).
//!
//! Plain SVG written by hand: two line charts do not justify a plotting
//! crate's build time on every CI run.

use std::fmt::Write;

use super::report::TimelinePoint;

const WIDTH: f64 = 760.0;
const CHART_HEIGHT: f64 = 240.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 36.0;
const GAP: f64 = 70.0;

/// One line of a chart.
struct Series<'a> {
    name: &'a str,
    color: &'a str,
    points: Vec<(f64, f64)>,
}

/// The SVG document for a run's timeline; `title` heads it.
pub fn timeline_svg(title: &str, timeline: &[TimelinePoint]) -> String {
    let x = |p: &TimelinePoint| p.viewers_connected as f64;
    let pick = |f: &dyn Fn(&TimelinePoint) -> Option<f64>| -> Vec<(f64, f64)> {
        timeline
            .iter()
            .filter_map(|p| f(p).filter(|v| v.is_finite()).map(|v| (x(p), v)))
            .collect()
    };
    let cpu = [
        Series {
            name: "server CPU %",
            color: "#d62728",
            points: pick(&|p| p.server_cpu_percent),
        },
        Series {
            name: "generator CPU %",
            color: "#7f7f7f",
            points: pick(&|p| p.generator_cpu_percent),
        },
    ];
    let latency = [
        Series {
            name: "latency p50 ms",
            color: "#1f77b4",
            points: pick(&|p| p.latency.as_ref().map(|l| l.p50_ms)),
        },
        Series {
            name: "latency p99 ms",
            color: "#ff7f0e",
            points: pick(&|p| p.latency.as_ref().map(|l| l.p99_ms)),
        },
    ];
    let x_max = timeline.iter().map(x).fold(1.0, f64::max);
    let height = TOP + 2.0 * CHART_HEIGHT + GAP + 50.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="20" font-size="14">{}</text>"#,
        escape(title)
    );
    chart(&mut svg, TOP, x_max, "CPU, % of one core", &cpu);
    chart(
        &mut svg,
        TOP + CHART_HEIGHT + GAP,
        x_max,
        "forwarding latency, ms",
        &latency,
    );
    let _ = writeln!(svg, "</svg>");
    svg
}

fn chart(svg: &mut String, top: f64, x_max: f64, label: &str, series: &[Series<'_>]) {
    let plot_w = WIDTH - LEFT - RIGHT;
    let y_max = nice_ceiling(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max),
    );
    let sx = |v: f64| LEFT + v / x_max * plot_w;
    let sy = |v: f64| top + CHART_HEIGHT - v / y_max * CHART_HEIGHT;
    let bottom = top + CHART_HEIGHT;
    let _ = writeln!(
        svg,
        r##"<g><rect x="{LEFT}" y="{top}" width="{plot_w}" height="{CHART_HEIGHT}" fill="none" stroke="#444"/><text x="{LEFT}" y="{}">{}</text>"##,
        top - 8.0,
        escape(label)
    );
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            sy(v) + 4.0,
            short(v),
            y = sy(v),
        );
        let xv = x_max * f64::from(i) / 4.0;
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            sx(xv),
            bottom + 16.0,
            short(xv)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">viewers connected</text>"#,
        LEFT + plot_w / 2.0,
        bottom + 32.0
    );
    for (i, s) in series.iter().enumerate() {
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            s.color,
            pts.join(" ")
        );
        let ly = top + 16.0 + 18.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            LEFT + plot_w + 10.0,
            LEFT + plot_w + 30.0,
            s.color,
            LEFT + plot_w + 36.0,
            ly + 4.0,
            escape(s.name)
        );
    }
    let _ = writeln!(svg, "</g>");
}

/// A round number at or above `v` for an axis top.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let exp = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * exp {
            return m * exp;
        }
    }
    10.0 * exp
}

fn short(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Percentiles;

    fn point(viewers: usize, cpu: f64, p99: f64) -> TimelinePoint {
        TimelinePoint {
            t_s: viewers as f64,
            viewers_connected: viewers,
            rx_packets_per_s: 0.0,
            rx_mbps: 0.0,
            latency: Some(Percentiles {
                count: 10,
                p50_ms: p99 / 2.0,
                p99_ms: p99,
                max_ms: p99,
            }),
            server_cpu_percent: Some(cpu),
            server_rss_mib: None,
            generator_cpu_percent: None,
            chat_latency: None,
        }
    }

    #[test]
    fn draws_cpu_and_latency_against_viewers() {
        let timeline = [
            point(0, 1.0, 2.0),
            point(50, 20.0, 4.0),
            point(100, 41.0, 9.0),
        ];
        let svg = timeline_svg("100 viewers <test>", &timeline);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("100 viewers &lt;test&gt;"));
        // Three points for server CPU and each latency line; none for the
        // generator's CPU, which this run did not measure.
        let lines: Vec<&str> = svg.lines().filter(|l| l.starts_with("<polyline")).collect();
        assert_eq!(lines.len(), 4);
        let counts: Vec<usize> = lines
            .iter()
            .map(|l| {
                let points = l.split("points=\"").nth(1);
                let points = points.and_then(|p| p.split('"').next());
                points.map_or(0, |p| p.split_whitespace().count())
            })
            .collect();
        assert_eq!(counts, [3, 0, 3, 3]);
        // The CPU axis tops out at a round number above 41.
        assert!(svg.contains(">50</text>"), "{svg}");
    }

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_ceiling(41.0), 50.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(180.0), 200.0);
        assert_eq!(nice_ceiling(2.2), 2.5);
    }
}
