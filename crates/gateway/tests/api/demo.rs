//! `/demo`: the browser console, served from the binary and driven in headless Chromium.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use faceswap_gateway::workers::monitor;
use faceswap_testkit::{TestApp, testdata};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::oneshot;

const CSP_START: &str = "default-src 'self'";

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn the_console_page_is_html_with_a_strict_content_security_policy(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for path in ["/demo", "/demo/"] {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers();
        assert_eq!(h["content-type"], "text/html; charset=utf-8", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with(CSP_START), "{csp}");
        assert!(csp.contains("img-src 'self' data: blob:"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let page = resp.text().await.unwrap();
        assert!(page.contains("<script src=\"/demo/demo.js\""), "{page}");
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "the page names no other origin"
        );
    }
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn console_assets_have_their_content_types_and_unknown_ones_404_in_the_envelope(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool).await;
    for (path, ct) in [
        ("/demo/demo.js", "text/javascript; charset=utf-8"),
        ("/demo/demo.css", "text/css; charset=utf-8"),
    ] {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["content-type"], ct, "{path}");
        assert!(resp.headers().contains_key("content-security-policy"));
        assert!(resp.bytes().await.unwrap().len() > 500, "{path}");
    }
    let (status, body) = app.get("/demo/nope.js", None).await;
    assert_eq!((status, body["code"].as_i64()), (404, Some(4004)), "{body}");
    let (status, body) = app.post("/demo", &json!({}), None).await;
    assert_eq!((status, body["code"].as_i64()), (405, Some(4005)), "{body}");
}

#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn the_console_is_kept_out_of_the_openapi_document(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (status, doc) = app.get("/openapi.json", None).await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.keys().all(|p| !p.starts_with("/demo")), "{paths:?}");
}

/// The whole tenant flow in a real browser on a real photo: wrong credentials show the
/// envelope, then token → detect (boxes drawn) → create → status 2 over SSE → Agora
/// parameters → update → close → past sessions; every request stays on the gateway.
#[sqlx::test(migrator = "faceswap_gateway::MIGRATOR")]
async fn a_tenant_runs_the_whole_flow_in_the_console_in_a_real_browser(pool: PgPool) {
    tokio::time::timeout(Duration::from_secs(60), console_flow(pool))
        .await
        .expect("the whole flow takes less than 60 s");
}

async fn console_flow(pool: PgPool) {
    // The face crop URLs the simulator mints are on loopback; the console offers the first
    // one as the session's source image.
    let app = TestApp::builder()
        .sim_flags(&["--queue-delay-ms", "200"])
        .allow_loopback()
        .spawn(pool)
        .await;
    let tenant = app.tenant(5, None).await;
    let browser = Browser::launch();
    let page = browser.open().await;
    page.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1000, "height": 800, "deviceScaleFactor": 1, "mobile": false}),
    )
    .await;
    page.call("Network.enable", json!({})).await;
    page.call("Page.enable", json!({})).await;
    page.call("Page.navigate", json!({"url": app.url("/demo")}))
        .await;
    // demo.js says so once its handlers are attached; clicks before that would be lost.
    page.wait_text("#auth-state", "Not signed in").await;

    // 1. Credentials: a wrong secret shows the envelope's code and message.
    page.fill("#client-id", &tenant.client_id).await;
    page.fill("#client-secret", "wrong").await;
    page.click("#get-token").await;
    let shown = page.wait_text("#error", "1101").await;
    assert!(shown.contains("HTTP 401"), "{shown}");
    page.fill("#client-secret", &tenant.client_secret).await;
    page.click("#get-token").await;
    page.wait_text("#auth-state", "gateway token").await;
    assert_eq!(
        page.eval("document.getElementById('error').hidden").await,
        true
    );

    // 2. Upload a real photo: detection draws its box and landmarks.
    let photo = std::env::temp_dir().join(format!(
        "faceswap-demo-{}.jpg",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&photo, testdata("face.jpg")).unwrap();
    let input = page.eval_object("document.getElementById('photo')").await;
    page.call(
        "DOM.setFileInputFiles",
        json!({"files": [photo.display().to_string()], "objectId": input}),
    )
    .await;
    page.wait_text("#detect-state", "1 face(s) found").await;
    let _ = std::fs::remove_file(&photo);
    let detection: Value = serde_json::from_str(page.text("#detect-json").await.as_str()).unwrap();
    assert_eq!(detection["error_code"], 0, "{detection}");
    assert_eq!(
        page.eval("document.getElementById('opts').value").await,
        detection["landmarks_str"][0],
        "opts built from the landmarks match the upstream's landmarks_str"
    );
    let region: Vec<f64> = serde_json::from_value(detection["region"][0].clone()).unwrap();
    assert_box_is_drawn(&page, &region).await;

    // 3. Create with the offered face URL; the status reaches 2 over the event stream.
    let face_url = page.eval("document.getElementById('face-url').value").await;
    assert!(
        face_url.as_str().is_some_and(|u| u.starts_with("http")),
        "{face_url}"
    );
    page.click("#create").await;
    let id = page.wait_text("#session-id", "ses_").await;
    page.wait_text("#status", "1 queuing").await;
    page.wait_text_with("#status", "2 processing", async || {
        // Test gateways run no background workers: the monitor is stepped here.
        monitor::run_once(&app.state, &app.workers).await.unwrap();
    })
    .await;
    let events = page.text("#events").await;
    assert!(events.contains("session.status_changed"), "{events}");

    // 4. The Agora join parameters are the session's, with the recommended tracks.
    let token = app.token(&tenant).await;
    let (_, info) = app
        .post(
            "/api/open/v3/faceswap/live/info",
            &json!({"_id": id}),
            Some(&token),
        )
        .await;
    for (sel, field) in [
        ("#channel-id", "channel_id"),
        ("#front-user-id", "front_user_id"),
        ("#front-rtc-token", "front_rtc_token"),
    ] {
        assert_eq!(
            page.text(sel).await,
            info["data"][field].as_str().unwrap(),
            "{field}"
        );
    }
    let snippet = page.text("#agora-snippet").await;
    for expected in [
        "width: 640",
        "height: 480",
        "frameRate: 20",
        "'music_standard'",
    ] {
        assert!(snippet.contains(expected), "{expected}: {snippet}");
    }

    // 5. Update the source face, then close.
    page.fill("#face-url", "https://images.example/other.jpg")
        .await;
    page.click("#update").await;
    page.wait_text("#events", "images.example/other.jpg").await;
    let (_, info) = app
        .post(
            "/api/open/v3/faceswap/live/info",
            &json!({"_id": id}),
            Some(&token),
        )
        .await;
    assert_eq!(
        info["data"]["sourceImage"][0]["path"],
        "https://images.example/other.jpg"
    );
    page.click("#close").await;
    page.wait_text("#status", "closed (client)").await;
    assert!(app.sim_stats().await.open_sessions.is_empty());

    // 6. Past sessions, with their resources.
    page.click("#list-sessions").await;
    let table = page.wait_text("#sessions", &id).await;
    assert!(table.contains("closed (client)"), "{table}");
    assert_eq!(
        page.eval("document.getElementById('error').hidden").await,
        true
    );

    // Nothing came from anywhere but the gateway.
    let requests = browser.events("Network.requestWillBeSent");
    let urls: Vec<&str> = requests
        .iter()
        .filter_map(|e| e["params"]["request"]["url"].as_str())
        .collect();
    for wanted in [
        "/demo",
        "/demo/demo.js",
        "/demo/demo.css",
        "/detect",
        "/v1/events",
    ] {
        assert!(
            urls.iter().any(|u| u.starts_with(&app.url(wanted))),
            "{wanted} was requested: {urls:?}"
        );
    }
    for url in &urls {
        assert!(
            url.starts_with(&format!("{}/", app.base_url))
                || url.starts_with("data:")
                || url.starts_with("blob:"),
            "the page loaded {url} from outside the gateway"
        );
    }
    let document = browser
        .events("Network.responseReceived")
        .into_iter()
        .find(|e| e["params"]["type"] == "Document")
        .expect("the page's own response");
    let headers = &document["params"]["response"]["headers"];
    let csp = headers["content-security-policy"]
        .as_str()
        .or(headers["Content-Security-Policy"].as_str())
        .unwrap_or_default();
    assert!(csp.starts_with(CSP_START), "{headers}");
}

/// The box's left edge, at mid-height, has the console's box colour in a screenshot; the
/// face's centre does not.
async fn assert_box_is_drawn(page: &Page<'_>, region: &[f64]) {
    page.eval("document.getElementById('canvas').scrollIntoView()")
        .await;
    let geometry = page
        .eval(
            "(() => { const c = document.getElementById('canvas'); \
             const r = c.getBoundingClientRect(); \
             return [r.left, r.top, r.width / c.width, r.height / c.height]; })()",
        )
        .await;
    let g: Vec<f64> = serde_json::from_value(geometry).unwrap();
    let (left, top, sx, sy) = (g[0], g[1], g[2], g[3]);
    let shot = page
        .call("Page.captureScreenshot", json!({"format": "png"}))
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    let img = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
        .unwrap()
        .to_rgb8();
    let [x, y, w, h] = [region[0], region[1], region[2], region[3]];
    let at = |cx: f64, cy: f64| {
        (
            (left + cx * sx).round() as i64,
            (top + cy * sy).round() as i64,
        )
    };
    let is_box = |p: &image::Rgb<u8>| p[0] < 60 && p[1] > 200 && p[2] < 60;
    let near = |(px, py): (i64, i64)| {
        (-1..=1).any(|dx| {
            (-1..=1).any(|dy| {
                img.get_pixel_checked((px + dx) as u32, (py + dy) as u32)
                    .is_some_and(is_box)
            })
        })
    };
    for (name, point) in [
        ("left edge", at(x, y + h / 2.0)),
        ("right edge", at(x + w, y + h / 2.0)),
        // A quarter of the way along: the chin landmark sits on the bottom edge's middle.
        ("top edge", at(x + w / 4.0, y)),
        ("bottom edge", at(x + w / 4.0, y + h)),
    ] {
        assert!(
            near(point),
            "the box's {name} at {point:?} is not drawn: {:?}",
            img.get_pixel_checked(point.0 as u32, point.1 as u32)
        );
    }
    assert!(
        !near(at(x + w / 2.0, y + h / 2.0)),
        "the face itself is not painted over"
    );
}

/// A minimal DevTools-protocol client over `--remote-debugging-pipe` (fd 3 in, fd 4 out,
/// messages separated by NUL). It needs no crate at all: no websocket client and no port to
/// discover, where `chromiumoxide` or `headless_chrome` would add a generated protocol crate
/// that takes minutes to build on two cores, for the dozen commands this test sends.
struct Browser {
    child: Child,
    stdin: Mutex<ChildStdin>,
    next_id: AtomicU64,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>,
    events: Arc<Mutex<Vec<Value>>>,
    profile: PathBuf,
}

/// Longest wait for one protocol answer, or for the page to show something.
const WAIT: Duration = Duration::from_secs(20);

impl Browser {
    fn launch() -> Self {
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let profile = std::env::temp_dir().join(format!(
            "faceswap-chromium-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&profile).unwrap();
        // The shell hands our stdin and stdout to Chromium as fds 3 and 4 (no unsafe pre_exec).
        let script = format!(
            "exec \"$0\" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
             --disable-background-networking --disable-component-update --disable-sync \
             --remote-debugging-pipe --user-data-dir='{}' about:blank \
             3<&0 4>&1 </dev/null >/dev/null 2>/dev/null",
            profile.display()
        );
        let mut child = Command::new("bash")
            .args(["-c", &script, &chromium])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{chromium} could not run ({e}); scripts/ensure-chromium.sh")
            });
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>> = Arc::default();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        std::thread::spawn({
            let (pending, events) = (pending.clone(), events.clone());
            move || {
                let mut reader = BufReader::new(stdout);
                let mut buf = Vec::new();
                while reader.read_until(0, &mut buf).is_ok_and(|n| n > 0) {
                    buf.pop_if(|b| *b == 0);
                    if let Ok(msg) = serde_json::from_slice::<Value>(&buf) {
                        match msg["id"].as_u64() {
                            Some(id) => {
                                if let Some(tx) = pending.lock().unwrap().remove(&id) {
                                    let _ = tx.send(msg);
                                }
                            }
                            None => events.lock().unwrap().push(msg),
                        }
                    }
                    buf.clear();
                }
                // The browser is gone: waiting callers fail at once.
                pending.lock().unwrap().clear();
            }
        });
        Self {
            child,
            stdin: Mutex::new(stdin),
            next_id: AtomicU64::new(1),
            pending,
            events,
            profile,
        }
    }

    async fn send(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.stdin.lock().unwrap().write_all(&bytes).unwrap();
        let answer = tokio::time::timeout(WAIT, rx)
            .await
            .unwrap_or_else(|_| panic!("{method}: no answer within {WAIT:?}"))
            .unwrap_or_else(|_| panic!("{method}: the browser exited"));
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// A new tab, attached in flat mode so its commands carry a session id.
    async fn open(&self) -> Page<'_> {
        let target = self
            .send(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = self
            .send(
                None,
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        Page {
            browser: self,
            session: attached["sessionId"].as_str().unwrap().to_owned(),
        }
    }

    /// Every event of this kind received so far.
    fn events(&self, method: &str) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["method"] == method)
            .cloned()
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// One tab.
struct Page<'a> {
    browser: &'a Browser,
    session: String,
}

impl Page<'_> {
    async fn call(&self, method: &str, params: Value) -> Value {
        self.browser.send(Some(&self.session), method, params).await
    }

    /// The value of a JavaScript expression (promises awaited).
    async fn eval(&self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// A remote object id, for commands that take a DOM node.
    async fn eval_object(&self, expression: &str) -> String {
        let r = self
            .call("Runtime.evaluate", json!({"expression": expression}))
            .await;
        r["result"]["objectId"].as_str().unwrap().to_owned()
    }

    /// The element's text; empty while it does not exist (e.g. before navigation commits).
    async fn text(&self, selector: &str) -> String {
        let js = format!(
            "document.querySelector({})?.textContent ?? ''",
            json!(selector)
        );
        self.eval(&js).await.as_str().unwrap_or_default().to_owned()
    }

    /// Polls until the element's text contains `wanted`; returns the text.
    async fn wait_text(&self, selector: &str, wanted: &str) -> String {
        self.wait_text_with(selector, wanted, async || {}).await
    }

    /// [`Self::wait_text`], running `between` before each look. A timeout reports what the
    /// page shows instead (which `eventually` cannot), so a failure explains itself.
    async fn wait_text_with(
        &self,
        selector: &str,
        wanted: &str,
        mut between: impl AsyncFnMut(),
    ) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            between().await;
            let text = self.text(selector).await;
            if text.contains(wanted) {
                return text;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{selector} did not show {wanted:?} within {WAIT:?} but {text:?}; \
                     error box: {:?}; events: {:?}",
                    self.text("#error").await,
                    self.text("#events").await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn fill(&self, selector: &str, value: &str) {
        let js = format!(
            "document.querySelector({}).value = {}",
            json!(selector),
            json!(value)
        );
        self.eval(&js).await;
    }

    async fn click(&self, selector: &str) {
        let js = format!("document.querySelector({}).click()", json!(selector));
        self.eval(&js).await;
    }
}
