//! The SVG charts of `simulate --vm ID -o svg` and `history --vm ID -o svg`, from the real
//! binary against the simulated cluster: valid XML, every point of the CSV or JSON of the same
//! command drawn where the panel's axes put it, axes labelled with units, and times in the
//! local time zone.

use std::time::Duration;

use crate::common::*;

const BERLIN: &[(&str, &str)] = &[("TZ", "Europe/Berlin")];

/// A panel's axes as the file states them, to map data to pixels.
struct Axes {
    t0: f64,
    t1: f64,
    y1: f64,
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

impl Axes {
    fn of(panel: roxmltree::Node) -> Axes {
        let f = |name: &str| -> f64 {
            panel
                .attribute(name)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("panel attribute {name}"))
        };
        Axes {
            t0: f("data-t0"),
            t1: f("data-t1"),
            y1: f("data-y1"),
            x: f("data-x"),
            y: f("data-y"),
            w: f("data-w"),
            h: f("data-h"),
        }
    }

    fn pixel(&self, t: f64, v: f64) -> (f64, f64) {
        (
            self.x + (t - self.t0) / (self.t1 - self.t0) * self.w,
            self.y + self.h - v / self.y1 * self.h,
        )
    }
}

/// The vertices of a path `M x y L x y ...`.
fn vertices(d: &str) -> Vec<(f64, f64)> {
    let numbers: Vec<f64> = d
        .split(|c: char| c == 'M' || c == 'L' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("a number in the path: {s}"))
        })
        .collect();
    numbers.chunks(2).map(|p| (p[0], p[1])).collect()
}

fn panel<'a>(doc: &'a roxmltree::Document, title: &str) -> roxmltree::Node<'a, 'a> {
    doc.descendants()
        .find(|n| n.attribute("class") == Some("panel") && n.attribute("data-title") == Some(title))
        .unwrap_or_else(|| panic!("panel {title}"))
}

fn series<'a>(panel: roxmltree::Node<'a, 'a>, id: &str) -> Vec<(f64, f64)> {
    let path = panel
        .descendants()
        .find(|n| n.attribute("data-series") == Some(id))
        .unwrap_or_else(|| panic!("series {id}"));
    vertices(path.attribute("d").unwrap_or_default())
}

fn assert_drawn(axes: &Axes, drawn: &[(f64, f64)], t: f64, v: f64, what: &str) {
    let (px, py) = axes.pixel(t, v);
    assert!(
        drawn
            .iter()
            .any(|(x, y)| (x - px).abs() < 0.051 && (y - py).abs() < 0.051),
        "{what} ({t}, {v}) should be drawn at ({px:.1}, {py:.1})"
    );
}

/// The text of every element of a class.
fn texts<'a>(doc: &'a roxmltree::Document, class: &str) -> Vec<(Option<&'a str>, &'a str)> {
    doc.descendants()
        .filter(|n| n.attribute("class") == Some(class))
        .map(|n| (n.attribute("data-t"), n.text().unwrap_or_default()))
        .collect()
}

#[test]
fn the_simulate_chart_draws_the_timeline_of_the_csv() {
    let env = TestEnv::start(
        cluster().vm(ready_vm(101, "pve1")
            .booted_ago(Duration::from_secs(86_400))
            .cpu_load(pvesim::Pattern::Periodic {
                base: 1.5,
                amplitude: 1.2,
                period: 6 * 3600,
            })
            .mem_load(pvesim::Pattern::Constant(1800.0))),
        "",
    );
    let args = ["simulate", "--since", "6h", "--vm", "101"];
    let csv = env.run_with_env(&[&args[..], &["--output", "csv"]].concat(), BERLIN);
    assert_eq!(csv.code, 0, "{}", csv.all_output());
    let svg = env.run_with_env(&[&args[..], &["--output", "svg"]].concat(), BERLIN);
    assert_eq!(svg.code, 0, "{}", svg.all_output());
    let doc = roxmltree::Document::parse(&svg.stdout).expect("the chart is valid XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");

    let (cpu, memory) = (panel(&doc, "CPU"), panel(&doc, "Memory"));
    let (cpu_axes, mem_axes) = (Axes::of(cpu), Axes::of(memory));
    let drawn = |p, id| series(p, id);
    let columns = [
        (cpu, &cpu_axes, "busy_cores", 1),
        (cpu, &cpu_axes, "actual_vcpus", 2),
        (cpu, &cpu_axes, "simulated_vcpus", 3),
        (memory, &mem_axes, "used_mib", 4),
        (memory, &mem_axes, "actual_memory_mib", 5),
        (memory, &mem_axes, "simulated_memory_mib", 6),
    ];
    let rows: Vec<Vec<&str>> = csv
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert!(rows.len() >= 300, "six hours of minutes: {}", rows.len());
    let start = |row: &Vec<&str>| -> f64 {
        let stamp = jiff::Timestamp::strptime("%Y-%m-%dT%H:%M:%SZ", row[0])
            .or_else(|_| row[0].parse::<jiff::Timestamp>())
            .unwrap_or_else(|e| panic!("a time in the CSV: {} ({e})", row[0]));
        stamp.as_second() as f64
    };
    let mut checked = 0;
    for (panel, axes, id, column) in columns {
        let points = drawn(panel, id);
        for row in &rows {
            let Ok(v) = row[column].parse::<f64>() else {
                continue;
            };
            assert_drawn(axes, &points, start(row), v, id);
            checked += 1;
        }
    }
    assert!(checked > 6 * 300, "{checked}");
    // Changes are marked, with the reason on hover.
    let marks: Vec<String> = doc
        .descendants()
        .filter(|n| n.attribute("class").is_some_and(|c| c.starts_with("mark")))
        .filter_map(|n| n.children().find(|c| c.has_tag_name("title")))
        .filter_map(|t| t.text().map(str::to_string))
        .collect();
    assert!(
        !marks.is_empty() && marks.iter().all(|m| m.contains(" → ")),
        "{marks:?}"
    );
    // Axes with units, times in the local zone.
    assert!(svg.stdout.contains(">cores / vCPUs<") && svg.stdout.contains(">MiB<"));
    assert!(svg.stdout.contains(">time (Europe/Berlin)<"), "zone named");
    let berlin = jiff::tz::TimeZone::get("Europe/Berlin").expect("tz database");
    let ticks = texts(&doc, "time");
    assert!(ticks.len() >= 3, "{ticks:?}");
    for (t, label) in ticks {
        let t: i64 = t.and_then(|t| t.parse().ok()).expect("data-t");
        let local = berlin.to_datetime(jiff::Timestamp::from_second(t).expect("a time"));
        let clock = format!("{:02}:{:02}", local.hour(), local.minute());
        assert!(label.ends_with(&clock), "{label} is not {clock} in Berlin");
    }
}

#[test]
fn the_history_chart_draws_the_sizes_set_and_marks_what_failed() {
    let env = busy_env();
    assert_eq!(env.run(&["run"]).code, 0);
    // The first write fails at the server; a later run makes the change.
    env.sim.add_fault(
        pvesim::Fault::on("POST", "/nodes/pve1/qemu/101/config")
            .status(500)
            .times(1),
    );
    env.run_every_minute(6);
    let json = env.run(&["history", "--vm", "101", "--output", "json"]);
    assert_eq!(json.code, 0, "{}", json.all_output());
    let entries = json.json();
    let entries = entries.as_array().expect("a list");
    let applied: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["outcome"] == "applied" && e["resource"] == "cpu")
        .collect();
    assert!(!applied.is_empty(), "the busy VM grew: {entries:?}");

    let svg = env.run_with_env(&["history", "--vm", "101", "--output", "svg"], BERLIN);
    assert_eq!(svg.code, 0, "{}", svg.all_output());
    let doc = roxmltree::Document::parse(&svg.stdout).expect("the chart is valid XML");
    let cpu = panel(&doc, "vCPUs");
    let axes = Axes::of(cpu);
    let drawn = series(cpu, "size");
    for e in &applied {
        let t = e["time"].as_f64().expect("time");
        for key in ["from", "to"] {
            let v = e[key].as_f64().expect("size");
            assert_drawn(&axes, &drawn, t, v, key);
        }
    }
    assert!(svg.stdout.contains(">vCPUs<") && svg.stdout.contains(">time (Europe/Berlin)<"));
    // What did not apply is marked where it happened, with what the server said.
    let failed: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["outcome"] != "applied" && e["resource"] != "memory")
        .collect();
    assert!(!failed.is_empty(), "{entries:?}");
    let marks: Vec<(Option<&str>, String)> = cpu
        .descendants()
        .filter(|n| n.attribute("class").is_some_and(|c| c.starts_with("mark ")))
        .map(|n| {
            let title = n.children().find(|c| c.has_tag_name("title"));
            (
                n.attribute("data-t"),
                title.and_then(|t| t.text()).unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(marks.len(), failed.len(), "{marks:?}");
    for e in failed {
        let t = e["time"].to_string();
        let outcome = e["outcome"].as_str().unwrap_or_default();
        assert!(
            marks
                .iter()
                .any(|(at, title)| *at == Some(t.as_str()) && title.starts_with(outcome)),
            "{e} not marked: {marks:?}"
        );
    }

    // `svg` needs `--vm`.
    let without = env.run(&["history", "--output", "svg"]);
    assert_eq!(without.code, 2, "{}", without.all_output());
}

#[test]
fn the_readme_shows_the_demo_chart_and_names_the_command_that_draws_it() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README");
    assert!(
        readme.contains("](docs/demo-web.svg)"),
        "the README shows the chart"
    );
    assert!(readme.contains("cargo run --example demo -- --chart docs/demo-web.svg"));
    let svg = std::fs::read_to_string(format!("{root}/docs/demo-web.svg")).expect("the chart");
    let doc = roxmltree::Document::parse(&svg).expect("valid XML");
    // The story: vCPUs that step up and back down.
    let vcpus: Vec<(f64, f64)> = series(panel(&doc, "CPU"), "vcpus");
    let levels: std::collections::BTreeSet<i64> =
        vcpus.iter().map(|(_, y)| (*y * 10.0) as i64).collect();
    assert!(levels.len() >= 3, "{vcpus:?}");
    let (first, last) = (
        vcpus.first().expect("points").1,
        vcpus.last().expect("points").1,
    );
    let highest = vcpus.iter().map(|(_, y)| *y).fold(f64::INFINITY, f64::min);
    assert!(
        highest < first && highest < last,
        "up, then back down: {vcpus:?}"
    );
}
