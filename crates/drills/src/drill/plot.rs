//! `plot.svg`: what the load saw over time, drawn from the journal with
//! plotters' SVG backend: checkout latency (p50 and p99, log scale), error
//! rate, throughput, and each dependency's breaker state as a band; every
//! fault's window (injection to heal) is one shaded band across all panels,
//! and the phases are marked.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use super::journal::{Edge, Entry, Event, Op};
use super::metrics::{Class, Timeline, percentile};

const WIDTH: u32 = 1100;
const HEIGHT: u32 = 820;
/// The shade of a fault's window; nothing else in the plot uses it.
pub const FAULT_SHADE: RGBColor = RGBColor(230, 120, 110);
const P50: RGBColor = RGBColor(31, 119, 180);
const P99: RGBColor = RGBColor(148, 52, 110);
const ERRORS: RGBColor = RGBColor(214, 39, 40);
const OK: RGBColor = RGBColor(44, 160, 44);
const SENT: RGBColor = RGBColor(127, 127, 127);
const FONT: &str = "sans-serif";

/// Per-second figures of the checkouts sent in that second.
struct Bucket {
    t_s: f64,
    p50: Option<f64>,
    p99: Option<f64>,
    error_rate: Option<f64>,
    ok: f64,
    sent: f64,
}

fn buckets(timeline: &Timeline, end_s: f64) -> Vec<Bucket> {
    let seconds = end_s.ceil() as usize;
    let mut by_second: Vec<Vec<&super::metrics::Request>> = vec![Vec::new(); seconds.max(1)];
    for request in timeline.requests.iter().filter(|r| r.op == Op::Checkout) {
        let second = ((request.t_ms / 1000.0) as usize).min(by_second.len() - 1);
        by_second[second].push(request);
    }
    by_second
        .iter()
        .enumerate()
        .map(|(second, requests)| {
            let answered: Vec<f64> = requests.iter().map(|r| r.ms).collect();
            let failed = requests
                .iter()
                .filter(|r| matches!(r.class(), Class::Shed | Class::Error))
                .count();
            Bucket {
                t_s: second as f64 + 0.5,
                p50: percentile(answered.clone(), 0.5),
                p99: percentile(answered, 0.99),
                error_rate: (!requests.is_empty()).then(|| failed as f64 / requests.len() as f64 * 100.0),
                ok: requests.iter().filter(|r| r.class() == Class::Ok).count() as f64,
                sent: requests.len() as f64,
            }
        })
        .collect()
}

/// Each fault's window in seconds: from its injection to its heal (or the end).
pub fn fault_windows(entries: &[Entry]) -> Vec<(String, f64, f64)> {
    let end_s = entries.last().map_or(0.0, |e| e.t_ms / 1000.0);
    let mut windows: Vec<(String, f64, f64)> = Vec::new();
    for entry in entries {
        match &entry.event {
            Event::Inject { fault, .. } => windows.push((fault.clone(), entry.t_ms / 1000.0, end_s)),
            Event::Heal { fault, .. } => {
                if let Some(window) = windows
                    .iter_mut()
                    .rev()
                    .find(|(name, _, end)| name == fault && *end == end_s)
                {
                    window.2 = entry.t_ms / 1000.0;
                }
            }
            _ => {}
        }
    }
    windows
}

/// One breaker's band: its label and its states as (start, end, state).
type Band = (String, Vec<(f64, f64, String)>);

/// Breaker states per (node, dependency) that ever left `closed`, as spans.
fn breaker_bands(entries: &[Entry], end_s: f64) -> Vec<Band> {
    let mut states: BTreeMap<String, Vec<(f64, String)>> = BTreeMap::new();
    for entry in entries {
        if let Event::Breaker {
            node,
            dependency,
            state,
        } = &entry.event
        {
            states
                .entry(format!("{node} {dependency}"))
                .or_default()
                .push((entry.t_ms / 1000.0, state.clone()));
        }
    }
    states
        .into_iter()
        .filter(|(_, changes)| changes.iter().any(|(_, state)| state != "closed"))
        .map(|(name, changes)| {
            let spans = changes
                .iter()
                .enumerate()
                .map(|(i, (start, state))| {
                    let end = changes.get(i + 1).map_or(end_s, |(next, _)| *next);
                    (*start, end, state.clone())
                })
                .collect();
            (name, spans)
        })
        .collect()
}

fn state_color(state: &str) -> RGBColor {
    match state {
        "open" => RGBColor(200, 30, 30),
        "half_open" => RGBColor(240, 170, 30),
        _ => RGBColor(120, 190, 120),
    }
}

type PlotResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Draws `plot.svg` at `path`; returns how many fault windows it shaded.
pub fn write_plot(path: &Path, entries: &[Entry]) -> anyhow::Result<usize> {
    draw(path, entries).map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))
}

fn draw(path: &Path, entries: &[Entry]) -> PlotResult<usize> {
    let timeline = Timeline::from_entries(entries, f64::INFINITY);
    let end_s = (timeline.end_ms / 1000.0).max(1.0);
    let buckets = buckets(&timeline, end_s);
    let windows = fault_windows(entries);
    let bands = breaker_bands(entries, end_s);
    let scenario = entries
        .iter()
        .find_map(|e| match &e.event {
            Event::Start { scenario, backend, .. } => Some(format!("{scenario} on {backend}")),
            _ => None,
        })
        .unwrap_or_default();

    let full = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    full.fill(&WHITE)?;
    let root = full.titled(&format!("Drill {scenario}: checkouts over time"), (FONT, 20))?;
    let panels = root.split_by_breakpoints([] as [u32; 0], [300u32, 470, 640]);
    let y_max = buckets.iter().filter_map(|b| b.p99).fold(10.0_f64, f64::max) * 1.5;
    let mut latency = ChartBuilder::on(&panels[0])
        .margin(10)
        .x_label_area_size(20)
        .y_label_area_size(60)
        .caption("latency of checkouts sent each second (ms, log scale)", (FONT, 14))
        .build_cartesian_2d(0f64..end_s, (0.5f64..y_max).log_scale())?;
    latency.configure_mesh().y_desc("ms").draw()?;
    let e_max = buckets
        .iter()
        .filter_map(|b| b.error_rate)
        .fold(5.0_f64, f64::max)
        .min(100.0)
        * 1.1;
    let mut errors = ChartBuilder::on(&panels[1])
        .margin(10)
        .x_label_area_size(20)
        .y_label_area_size(60)
        .caption("checkout error rate (%): shed, 5xx, no answer", (FONT, 14))
        .build_cartesian_2d(0f64..end_s, 0f64..e_max)?;
    errors.configure_mesh().y_desc("%").draw()?;
    let t_max = buckets.iter().map(|b| b.sent).fold(1.0_f64, f64::max) * 1.2;
    let mut throughput = ChartBuilder::on(&panels[2])
        .margin(10)
        .x_label_area_size(20)
        .y_label_area_size(60)
        .caption("checkouts per second: sent, and acknowledged (201/202)", (FONT, 14))
        .build_cartesian_2d(0f64..end_s, 0f64..t_max)?;
    throughput.configure_mesh().y_desc("/s").draw()?;
    let rows = bands.len().max(1) as f64;
    let mut breakers = ChartBuilder::on(&panels[3])
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .caption("circuit breakers (green closed, amber half open, red open)", (FONT, 14))
        .build_cartesian_2d(0f64..end_s, 0f64..rows)?;
    breakers
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc("seconds since the drill began")
        .draw()?;

    // One band per fault across every panel, behind the lines.
    let top = latency.backend_coord(&(0.0, y_max)).1;
    let bottom = breakers.backend_coord(&(0.0, 0.0)).1;
    for (n, (name, start, end)) in windows.iter().enumerate() {
        let (x0, x1) = (
            latency.backend_coord(&(*start, y_max)).0,
            latency.backend_coord(&(*end, y_max)).0,
        );
        full.draw(&Rectangle::new(
            [(x0, top), (x1.max(x0 + 1), bottom)],
            FAULT_SHADE.mix(0.25).filled(),
        ))?;
        let label_y = top + 18 + 14 * i32::try_from(n).unwrap_or(0);
        full.draw(&Text::new(
            format!("fault: {name}"),
            (x0 + 4, label_y),
            (FONT, 12).into_font().color(&ERRORS),
        ))?;
    }
    // Phase marks; a phase that took no time (an instant heal) shares its
    // line with the next, so labels step down instead of overlapping.
    let mut last_x: Option<i32> = None;
    let mut row = 0;
    for entry in entries {
        if let Event::Phase {
            phase,
            edge: Edge::Start,
        } = &entry.event
        {
            let x = latency.backend_coord(&(entry.t_ms / 1000.0, y_max)).0;
            row = if last_x.is_some_and(|last| x - last < 40) {
                row + 1
            } else {
                0
            };
            last_x = Some(x);
            full.draw(&PathElement::new(vec![(x, top), (x, bottom)], SENT.mix(0.6)))?;
            full.draw(&Text::new(phase.as_str(), (x + 3, top + 2 + 12 * row), (FONT, 11)))?;
        }
    }

    let line = |pick: fn(&Bucket) -> Option<f64>| -> Vec<(f64, f64)> {
        buckets.iter().filter_map(|b| pick(b).map(|v| (b.t_s, v))).collect()
    };
    latency
        .draw_series(LineSeries::new(
            line(|b| b.p50.map(|v| v.max(0.5))),
            P50.stroke_width(2),
        ))?
        .label("p50")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], P50.stroke_width(2)));
    latency
        .draw_series(LineSeries::new(
            line(|b| b.p99.map(|v| v.max(0.5))),
            P99.stroke_width(2),
        ))?
        .label("p99")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], P99.stroke_width(2)));
    latency
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    errors.draw_series(LineSeries::new(line(|b| b.error_rate), ERRORS.stroke_width(2)))?;
    throughput
        .draw_series(LineSeries::new(line(|b| Some(b.sent)), SENT.stroke_width(1)))?
        .label("sent")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], SENT));
    throughput
        .draw_series(LineSeries::new(line(|b| Some(b.ok)), OK.stroke_width(2)))?
        .label("acknowledged")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], OK.stroke_width(2)));
    throughput
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    if bands.is_empty() {
        breakers.draw_series(std::iter::once(Text::new(
            "every breaker stayed closed",
            (end_s * 0.02, 0.6),
            (FONT, 12),
        )))?;
    }
    for (row, (name, spans)) in bands.iter().enumerate() {
        let y = row as f64;
        breakers.draw_series(spans.iter().map(|(start, end, state)| {
            Rectangle::new([(*start, y + 0.15), (*end, y + 0.85)], state_color(state).filled())
        }))?;
        breakers.draw_series(std::iter::once(Text::new(
            name.clone(),
            (end_s * 0.01, y + 0.75),
            (FONT, 12),
        )))?;
    }
    full.present()?;
    Ok(windows.len())
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::drill::journal::Phase;

    fn at(t_ms: f64, event: Event) -> Entry {
        Entry {
            t_ms,
            wall: Utc::now(),
            event,
        }
    }

    #[test]
    fn each_fault_gets_one_shaded_window() {
        let mut entries = vec![at(
            0.0,
            Event::Phase {
                phase: Phase::Baseline,
                edge: Edge::Start,
            },
        )];
        for i in 0..300 {
            let t = f64::from(i) * 50.0;
            entries.push(at(
                t,
                Event::Request {
                    op: Op::Checkout,
                    status: if (5_000.0..9_000.0).contains(&t) { 503 } else { 201 },
                    ms: 5.0 + t / 1000.0,
                    retry_after: true,
                    node: 0,
                },
            ));
        }
        for (t, name) in [(5_000.0, "first"), (6_000.0, "second")] {
            entries.push(at(
                t,
                Event::Inject {
                    fault: name.into(),
                    target: "partner".into(),
                    detail: String::new(),
                    time_limit_ms: 1,
                },
            ));
        }
        for (t, state) in [(1.0, "closed"), (5_500.0, "open"), (9_500.0, "closed")] {
            entries.push(at(
                t,
                Event::Breaker {
                    node: "orders-1".into(),
                    dependency: "inventory".into(),
                    state: state.into(),
                },
            ));
        }
        for (t, name) in [(9_000.0, "second"), (9_000.0, "first")] {
            entries.push(at(
                t,
                Event::Heal {
                    fault: name.into(),
                    target: "partner".into(),
                    detail: String::new(),
                    ok: true,
                },
            ));
        }
        entries.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
        let path = std::env::temp_dir().join(format!("holdfast-plot-{}.svg", uuid::Uuid::now_v7().simple()));
        assert_eq!(write_plot(&path, &entries).unwrap(), 2);
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let shade = format!(
            "fill=\"#{:02X}{:02X}{:02X}\"",
            FAULT_SHADE.0, FAULT_SHADE.1, FAULT_SHADE.2
        );
        assert_eq!(svg.matches(&shade).count(), 2, "one shaded window per fault");
        assert!(svg.contains("orders-1 inventory"), "the breaker band is labelled");
    }
}
