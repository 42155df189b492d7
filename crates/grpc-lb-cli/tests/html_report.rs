//! The HTML report of a `--duration` load, opened in headless Chromium:
//! the DOM Chromium built from the page holds every chart with its data
//! points (the histogram's bars add up to the calls, each backend has its
//! share over time, the channel and each subchannel their states), and its
//! screenshot shows them (the charts' colours cover real areas of it).
//!
//! Chromium is Debian's `chromium` package (`scripts/test` installs it); the
//! test fails, saying so, when it is missing.

#[path = "support/png.rs"]
mod png;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::*;

/// A directory of the test's own under the system's temporary one; removed
/// when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path =
            std::env::temp_dir().join(format!("grpc-lb-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("GRPC_LB_TEST_CHROMIUM") {
        return PathBuf::from(path);
    }
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "the HTML report test needs Chromium: install it with \
         `apt-get install -y chromium` (scripts/test does), or set GRPC_LB_TEST_CHROMIUM"
    );
}

/// Runs headless Chromium on `page` with `extra` flags and a profile of its
/// own under `dir`, nothing fetched from the network, for at most a minute.
fn headless(dir: &Path, profile: &str, extra: &[String], page: &Path) -> Output {
    let child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", dir.join(profile).display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let id = child.id();
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match result.recv_timeout(Duration::from_secs(60)) {
        Ok(output) => output.expect("chromium ran"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &id.to_string()]).status();
            panic!("chromium ran longer than a minute on {}", page.display());
        }
    }
}

/// The attributes of every `<NAME ...>` start tag in `html`, in order.
fn tags(html: &str, name: &str) -> Vec<BTreeMap<String, String>> {
    let open = format!("<{name} ");
    html.split(&open)
        .skip(1)
        .map(|rest| {
            let tag = rest.split('>').next().unwrap_or("");
            let mut attributes = BTreeMap::new();
            for part in tag.split("\" ") {
                if let Some((key, value)) = part.trim().split_once("=\"") {
                    attributes.insert(key.to_owned(), value.trim_end_matches('"').to_owned());
                }
            }
            attributes
        })
        .collect()
}

fn of_class<'a>(
    tags: &'a [BTreeMap<String, String>],
    class: &'a str,
) -> impl Iterator<Item = &'a BTreeMap<String, String>> + 'a {
    tags.iter().filter(move |t| {
        t.get("class")
            .is_some_and(|c| c.split(' ').any(|word| word == class))
    })
}

#[test]
fn the_html_report_renders_its_charts_in_chromium() {
    let dir = TempDir::new("html-report");
    let serve = Serve::start(2, &[]);
    let dead = dead_port();
    let page = dir.0.join("report.html");
    let page_arg = page.to_str().unwrap().to_owned();
    let output = grpc_lb(&[
        "call",
        &ipv4(&[serve.addrs[0], serve.addrs[1], dead]),
        "--policy",
        "round_robin",
        "--duration",
        "1.5",
        "--rps",
        "200",
        "--concurrency",
        "4",
        "--backoff-base-ms",
        "100",
        "--backoff-max-ms",
        "200",
        "--html",
        &page_arg,
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let report = json_of(&output);
    let requests = report["requests"].as_u64().unwrap();
    assert!(requests > 0, "{report}");

    // Self-contained: nothing to fetch, no script at all.
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    for outside in ["src=", "href=", "<link", "<script", "url(", "@import"] {
        assert!(!html.contains(outside), "the page holds {outside:?}");
    }
    let without_xmlns = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(!without_xmlns.contains("http://") && !without_xmlns.contains("https://"));

    // The DOM Chromium built from it.
    let dom = headless(&dir.0, "dom-profile", &["--dump-dom".to_owned()], &page);
    assert!(dom.status.success(), "{}", stderr_of(&dom));
    let dom = String::from_utf8(dom.stdout).unwrap();
    let svgs = tags(&dom, "svg");
    let charts: BTreeSet<&str> = of_class(&svgs, "chart")
        .filter_map(|t| t.get("id").map(String::as_str))
        .collect();
    assert_eq!(
        charts,
        BTreeSet::from([
            "backend-share",
            "latency-histogram",
            "state-timeline",
            "throughput"
        ]),
        "{dom}"
    );
    let rects = tags(&dom, "rect");

    // The histogram's bars hold every call.
    let bars: Vec<u64> = of_class(&rects, "bar")
        .map(|t| t["data-count"].parse().unwrap())
        .collect();
    assert_eq!(bars.len(), 40, "{dom}");
    assert_eq!(bars.iter().sum::<u64>(), requests, "{dom}");

    // Each live backend has its share over time, and the shares hold every
    // call.
    let shares: Vec<_> = of_class(&rects, "share").collect();
    for addr in &serve.addrs {
        let columns = shares
            .iter()
            .filter(|t| t["data-backend"] == addr.to_string())
            .count();
        assert!(columns >= 5, "{addr}: {columns} columns");
    }
    let shared: u64 = shares
        .iter()
        .map(|t| t["data-calls"].parse::<u64>().unwrap())
        .sum();
    assert_eq!(shared, requests);

    // Calls per second, a point per column, and the target.
    let circles = tags(&dom, "circle");
    assert!(of_class(&circles, "point").count() >= 5, "{dom}");
    assert!(dom.contains("id=\"target-rate\""), "{dom}");

    // The channel and each subchannel have a row of states: the dead one
    // failing, the live ones READY.
    let states: Vec<_> = of_class(&rects, "state").collect();
    let row = |name: String| -> BTreeSet<String> {
        states
            .iter()
            .filter(|t| t["data-row"] == name)
            .map(|t| t["data-state"].clone())
            .collect()
    };
    let channel = row("channel".to_owned());
    assert!(
        channel.contains("IDLE") && channel.contains("READY"),
        "{channel:?}"
    );
    for addr in &serve.addrs {
        assert!(row(addr.to_string()).contains("READY"), "{addr}");
    }
    assert!(row(dead.to_string()).contains("TRANSIENT_FAILURE"), "{dom}");

    // The screenshot: the charts' colours cover real areas of it.
    let shot = dir.0.join("report.png");
    let output = headless(
        &dir.0,
        "shot-profile",
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1000,1500".to_owned(),
        ],
        &page,
    );
    assert!(output.status.success(), "{}", stderr_of(&output));
    let image = png::decode(&std::fs::read(&shot).unwrap()).unwrap();
    assert_eq!((image.width, image.height), (1000, 1500));
    let ready = image.count_near([0x59, 0xa1, 0x4f], 6);
    let bars_and_first_backend = image.count_near([0x4e, 0x79, 0xa7], 6);
    let second_backend = image.count_near([0xf2, 0x8e, 0x2b], 6);
    let failure = image.count_near([0xe1, 0x57, 0x59], 6);
    assert!(ready > 2000, "READY green: {ready} pixels");
    assert!(
        bars_and_first_backend > 2000,
        "blue: {bars_and_first_backend} pixels"
    );
    assert!(second_backend > 2000, "orange: {second_backend} pixels");
    assert!(failure > 50, "TRANSIENT_FAILURE red: {failure} pixels");
    assert!(image.distinct_colours() > 20);
}

#[test]
fn format_html_prints_the_page() {
    let serve = Serve::start(1, &[]);
    let output = grpc_lb(&[
        "call",
        &serve.target(),
        "--duration",
        "0.3",
        "--format",
        "html",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let page = String::from_utf8(output.stdout).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    assert!(page.trim_end().ends_with("</html>"));
    for id in [
        "latency-histogram",
        "throughput",
        "backend-share",
        "state-timeline",
    ] {
        assert!(page.contains(&format!("id=\"{id}\"")), "{id}");
    }
    assert!(page.contains(&serve.addrs[0].to_string()));
}
