//! The WebDriver client against a real headless Chromium and a static page served on
//! 127.0.0.1:0. Skips (and says so) where Chromium is not installed, unless
//! `LIENTHONG_REQUIRE_BROWSER` is set.

#![allow(clippy::print_stderr)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lienthong_testkit::browser::Browser;
use lienthong_testkit::within;
use serde_json::json;
use tokio::net::TcpListener;

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Probe</title></head>
<body>
<p id="out" data-state="idle">waiting</p>
<input id="name" value="">
<button id="go">Go</button>
<ul><li class="item">one</li><li class="item">two</li></ul>
<a id="download" download="probe.bin" href="data:application/octet-stream;base64,AAECAw==">download</a>
<script>
  document.getElementById('go').addEventListener('click', () => {
    // Later, so the test has to wait for it.
    setTimeout(() => {
      const out = document.getElementById('out');
      out.textContent = 'hello ' + document.getElementById('name').value;
      out.dataset.state = 'done';
      const p = document.createElement('p');
      p.id = 'done';
      p.textContent = 'clicked';
      document.body.append(p);
    }, 100);
  });
</script>
</body></html>"#;

/// Serves `PAGE` at every path until the test ends.
async fn serve_page() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    Response::builder()
                        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
                        .body(Full::new(Bytes::from_static(PAGE.as_bytes())))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn drives_a_page_in_headless_chromium() {
    let addr = serve_page().await;
    let Some(browser) = within(Browser::start()).await.expect("start the browser") else {
        eprintln!("skipped: no chromium");
        return;
    };

    within(browser.goto(&format!("http://{addr}/"))).await.expect("open the page");
    let out = browser.find("#out").await.expect("#out");
    assert_eq!(out.text().await.expect("text"), "waiting");
    assert_eq!(out.attribute("data-state").await.expect("attribute").as_deref(), Some("idle"));
    assert_eq!(out.attribute("data-nothing").await.expect("attribute"), None);

    let items = browser.find_all("li.item").await.expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!(items[1].text().await.expect("text"), "two");
    assert!(browser.find_all(".absent").await.expect("none").is_empty());
    let missing = browser.find("#absent").await.expect_err("no such element");
    assert!(missing.contains("no such element"), "{missing}");

    let name = browser.find("#name").await.expect("#name");
    name.send_keys("Hà Nội").await.expect("type");
    assert_eq!(name.property("value").await.expect("value"), json!("Hà Nội"));

    browser.find("#go").await.expect("#go").click().await.expect("click");
    let done = browser.wait_for("#done", Duration::from_secs(10)).await.expect("#done appears");
    assert_eq!(done.text().await.expect("text"), "clicked");
    assert_eq!(out.text().await.expect("text"), "hello Hà Nội");

    let state = browser
        .wait_until(
            "return arguments[0].dataset.state === 'done';",
            vec![out.as_arg()],
            Duration::from_secs(5),
        )
        .await
        .expect("state");
    assert_eq!(state, json!(true));
    let sum = browser.execute("return arguments[0] + arguments[1];", vec![json!(2), json!(3)]).await;
    assert_eq!(sum.expect("execute"), json!(5));

    let timed_out = browser.wait_for("#never", Duration::from_millis(300)).await.expect_err("bounded");
    assert!(timed_out.contains("#never"), "{timed_out}");

    browser.execute("console.error('probe error');", vec![]).await.expect("log an error");
    let log = browser.browser_log().await.expect("browser log");
    assert!(
        log.iter()
            .any(|e| e["level"] == "SEVERE"
                && e["message"].as_str().is_some_and(|m| m.contains("probe error"))),
        "{log:?}"
    );

    // Downloads land in the browser's own directory, where a test can read them.
    browser.find("#download").await.expect("#download").click().await.expect("click");
    let file = browser.download_dir().join("probe.bin");
    for _ in 0..100 {
        if file.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(std::fs::read(&file).expect("the download"), [0, 1, 2, 3]);

    within(browser.quit()).await;
}
