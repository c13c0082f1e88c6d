//! The status page in a real browser: headless Chromium loads `GET /` from a server under
//! load, the page polls `/status.json`, and we check — in the DOM it leaves and in a
//! screenshot — that every chart has data. Chromium may resolve no host but 127.0.0.1, so
//! nothing leaves the machine (the page has no external resources anyway).
//!
//! `scripts/test.sh` installs Chromium (Debian's `chromium`) when it is missing.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{fast_sim, serve_config, start_serve, start_worker, wait_exit, Infra};

/// The browser binary: `$CHROMIUM`, or the first of the usual names found on `PATH`.
fn chromium() -> String {
    if let Ok(path) = std::env::var("CHROMIUM") {
        return path;
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if found {
            return name.to_owned();
        }
    }
    panic!("no Chromium found: scripts/test.sh installs Debian's `chromium`; or set CHROMIUM");
}

/// Runs headless Chromium on `url` with `mode` (`--dump-dom` or `--screenshot=FILE`), letting
/// the page run for 6 s of its own time (timers advance only while no fetch is pending, so
/// each poll gets its answer). Returns stdout.
fn browse(url: &str, profile: &Path, mode: &str) -> String {
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--metrics-recording-only",
            // Every name resolves to nothing, but the loopback address we serve on.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--window-size=1280,1100",
            "--virtual-time-budget=6000",
            &format!("--user-data-dir={}", profile.display()),
            mode,
            url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut out).expect("read chromium output");
        out
    });
    let status = wait_exit(&mut child, Duration::from_secs(120));
    assert!(status.success(), "chromium failed: {status}");
    reader.join().expect("reader thread")
}

/// The value of `attr` on the element whose `id` is `id`, in serialized HTML.
fn attribute(dom: &str, id: &str, attr: &str) -> Option<u64> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let tag_start = dom[..at].rfind('<')?;
    let tag = &dom[tag_start..tag_start + dom[tag_start..].find('>')?];
    let value = tag.split(&format!("{attr}=\"")).nth(1)?.split('"').next()?;
    value.parse().ok()
}

/// Pixels of the charts' main line colour (`#4fc3f7`) in a PNG screenshot.
fn accent_pixels(png_path: &Path) -> usize {
    let file = std::fs::File::open(png_path).expect("screenshot written");
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("a size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let channels = info.color_type.samples();
    buf[..info.buffer_size()]
        .chunks(channels)
        .filter(|p| {
            channels >= 3
                && p[0].abs_diff(0x4f) < 24
                && p[1].abs_diff(0xc3) < 24
                && p[2].abs_diff(0xf7) < 24
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_draws_live_charts_in_headless_chromium() {
    let worker = start_worker(fast_sim(4)).await;
    let serve = start_serve(serve_config(&Infra::None, &worker.url, 4)).await;
    // Steady load while the browser watches: 8 clients in a loop, bounded in count.
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..8)
        .map(|c| {
            let (url, stop, http) = (serve.url.clone(), stop.clone(), common::client());
            tokio::spawn(async move {
                for i in 0..5_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    common::infer(&http, &url, &format!("page-{c}-{i}")).await;
                }
            })
        })
        .collect();

    let profile = tempfile::tempdir().expect("profile dir");
    // Kept after the test, for a human to look at.
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let page = format!("{}/", serve.url);
    let (dom, ()) = {
        let (page, profile_dir, shot) = (page.clone(), profile.path().to_owned(), shot.clone());
        tokio::task::spawn_blocking(move || {
            let dom = browse(&page, &profile_dir.join("a"), "--dump-dom");
            browse(
                &page,
                &profile_dir.join("b"),
                &format!("--screenshot={}", shot.display()),
            );
            (dom, ())
        })
        .await
        .expect("browser thread")
    };
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }

    let samples: Option<u64> = dom
        .split("data-samples=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok());
    assert!(
        samples.is_some_and(|n| n >= 3),
        "the page polled /status.json: {samples:?}\n{dom}"
    );
    for chart in ["c-rate", "c-depth", "c-latency", "c-busy", "c-batch"] {
        let points = attribute(&dom, chart, "data-points");
        assert!(
            points.is_some_and(|n| n > 0),
            "chart {chart} has data: {points:?}\n{dom}"
        );
    }
    // The last poll was answered (the header says "live", not "no answer").
    assert!(
        dom.contains("id=\"state\">live · "),
        "the page is live\n{dom}"
    );
    let pixels = accent_pixels(&shot);
    assert!(
        pixels > 500,
        "the screenshot shows drawn charts ({pixels} accent pixels)"
    );

    serve.shutdown().await;
    worker.stop.cancel();
}
