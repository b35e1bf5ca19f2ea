//! Debian's headless Chromium for the console's browser tests, driven over the WebDriver
//! protocol: plain HTTP and JSON to a `chromedriver` of its own (so the few calls below are the
//! whole client), at a phone's width unless a test asks otherwise. Each page a test wants kept
//! is written as a PNG into the directory it names. `scripts/test.sh` installs `chromium` and
//! `chromium-driver` when they are missing.

use crate::wait_for;
use base64::Engine as _;
use serde_json::{Value, json};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The key WebDriver types for Tab.
pub const TAB: &str = "\u{E004}";

/// One Chromium session through a `chromedriver` of its own, killed when dropped.
#[derive(Debug)]
pub struct Chromium {
    http: reqwest::Client,
    session: String,
    driver: std::process::Child,
    /// Where [`Chromium::screenshot`] writes.
    pub shots: PathBuf,
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // chromedriver leads a process group of its own, which its Chromium and Chromium's
        // helpers join: killing chromedriver alone left them running after every test.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Chromium {
    /// Starts `chromedriver` on a free port and a headless Chromium session in a window of
    /// `width`×`height` CSS pixels; screenshots go to `shots` (created).
    pub async fn start(shots: &Path, width: u32, height: u32) -> Self {
        let port = hopsbridge_testkit::free_port();
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; scripts/test.sh installs it)");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
        let base = format!("http://127.0.0.1:{port}");
        wait_for("chromedriver", Duration::from_secs(20), || async {
            let r = http.get(format!("{base}/status")).send().await.ok()?;
            let status: Value = r.json().await.ok()?;
            status["value"]["ready"].as_bool().filter(|r| *r)
        })
        .await;
        // Headless Chromium keeps its window at least 500 px wide: a phone's width is emulated
        // (its viewport, as a phone's browser lays the page out), not a window's.
        let capabilities = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     format!("--window-size={},{}", width.max(500), height)],
            "mobileEmulation": {"deviceMetrics": {"width": width, "height": height, "pixelRatio": 1.0}}
        }}}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("a session")
            .json()
            .await
            .expect("the session's JSON");
        let session =
            created["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {created}")).to_owned();
        std::fs::create_dir_all(shots).expect("the screenshots' directory");
        let browser = Self { http, session: format!("{base}/session/{session}"), driver, shots: shots.to_owned() };
        // Finding an element waits a little for it, as a person's eyes do for a page to draw.
        browser.command(reqwest::Method::POST, "/timeouts", Some(json!({"implicit": 5000}))).await;
        browser
    }

    /// One WebDriver command; fails the test on a WebDriver error.
    pub async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value =
            request.send().await.expect("chromedriver answers").json().await.expect("chromedriver's JSON");
        assert!(answer["value"]["error"].is_null(), "WebDriver {path}: {answer}");
        answer["value"].clone()
    }

    /// One WebDriver command; `None` on a WebDriver error (e.g. while a page is replaced).
    async fn try_command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Option<Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.ok()?.json().await.ok()?;
        answer["value"]["error"].is_null().then(|| answer["value"].clone())
    }

    /// Clicks the element `css` selects, which leads to another page (a link, a form's
    /// button), and waits until that page has loaded.
    pub async fn follow(&self, css: &str) {
        self.script("window.hopsbridgeLeft = true; return null;").await;
        self.click(css).await;
        wait_for(&format!("the page {css} leads to"), Duration::from_secs(30), || async {
            let script =
                json!({"script": "return document.readyState === 'complete' && !window.hopsbridgeLeft;", "args": []});
            self.try_command(reqwest::Method::POST, "/execute/sync", Some(script)).await?.as_bool().filter(|b| *b)
        })
        .await;
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.command(reqwest::Method::GET, "/url", None).await.as_str().unwrap_or_default().to_owned()
    }

    /// The current page's HTML as the browser has it.
    pub async fn source(&self) -> String {
        self.command(reqwest::Method::GET, "/source", None).await.as_str().unwrap_or_default().to_owned()
    }

    /// The visible text of the page's body.
    pub async fn text(&self) -> String {
        let body = self.find("body").await;
        self.command(reqwest::Method::GET, &format!("/element/{body}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The element `css` selects (the first), failing the test when there is none.
    pub async fn find(&self, css: &str) -> String {
        let found =
            self.command(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css}))).await;
        found[ELEMENT].as_str().unwrap_or_else(|| panic!("{css}: {found}")).to_owned()
    }

    /// How many elements `css` selects.
    pub async fn count(&self, css: &str) -> usize {
        let found = self
            .command(reqwest::Method::POST, "/elements", Some(json!({"using": "css selector", "value": css})))
            .await;
        found.as_array().map_or(0, Vec::len)
    }

    /// Clicks the element `css` selects.
    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.command(reqwest::Method::POST, &format!("/element/{id}/click"), Some(json!({}))).await;
    }

    /// Types `text` into the element `css` selects (for a file input: the file's path, which
    /// chooses it as a person picking it in the dialog would).
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.command(reqwest::Method::POST, &format!("/element/{id}/value"), Some(json!({ "text": text }))).await;
    }

    /// Empties the field `css` selects.
    pub async fn clear(&self, css: &str) {
        let id = self.find(css).await;
        self.command(reqwest::Method::POST, &format!("/element/{id}/clear"), Some(json!({}))).await;
    }

    /// Presses `keys` on the keyboard, wherever the focus is (e.g. [`TAB`]).
    pub async fn press(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|k| {
                [json!({"type": "keyDown", "value": k.to_string()}), json!({"type": "keyUp", "value": k.to_string()})]
            })
            .collect();
        let body = json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]});
        self.command(reqwest::Method::POST, "/actions", Some(body)).await;
    }

    /// Runs `script` in the page (WebDriver's script runs outside the page's content security
    /// policy, as a person's browser tools do) and answers what it returns.
    pub async fn script(&self, script: &str) -> Value {
        self.command(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": []}))).await
    }

    /// Resizes the window to `width`×`height` CSS pixels.
    pub async fn resize(&self, width: u32, height: u32) {
        self.command(reqwest::Method::POST, "/window/rect", Some(json!({"width": width, "height": height}))).await;
    }

    /// Writes the page as `<shots>/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.command(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .expect("a base64 screenshot");
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(self.shots.join(format!("{name}.png")), bytes).expect("the screenshot written");
    }

    /// Waits until the current URL starts with `prefix`; answers it.
    pub async fn wait_url(&self, prefix: &str, timeout: Duration) -> String {
        wait_for(&format!("a page at {prefix}"), timeout, || async {
            let url = self.url().await;
            url.starts_with(prefix).then_some(url)
        })
        .await
    }

    /// The page's accessibility basics: every form control (but hidden inputs) has a label
    /// (`<label for>`, a wrapping label or `aria-label`), nothing that takes input is kept out of
    /// the keyboard's reach (`tabindex="-1"`), the page is no wider than the window (no
    /// horizontal scrolling), and every text outside the charts has WCAG AA contrast against
    /// the background it is drawn on (4.5:1, 3:1 for large text). Answers each problem found,
    /// empty when there is none.
    pub async fn accessibility_problems(&self) -> Vec<String> {
        let found = self
            .script(
                "const problems = [];\
                 for (const el of document.querySelectorAll('input, select, textarea, button, a[href]')) {\
                   if (el.type === 'hidden') continue;\
                   const what = el.outerHTML.slice(0, 120);\
                   if (el.getAttribute('tabindex') === '-1') problems.push('out of the keyboard: ' + what);\
                   if (['INPUT', 'SELECT', 'TEXTAREA'].includes(el.tagName)\
                       && el.labels.length === 0 && !el.getAttribute('aria-label')) problems.push('no label: ' + what);\
                   if ((el.tagName === 'BUTTON' || el.tagName === 'A') && el.textContent.trim() === ''\
                       && !el.getAttribute('aria-label')) problems.push('no name: ' + what);\
                 }\
                 const root = document.documentElement;\
                 if (root.scrollWidth > root.clientWidth) {\
                   const wide = [...document.body.querySelectorAll('*')]\
                     .filter(e => e.getBoundingClientRect().right > root.clientWidth + 1)\
                     .map(e => e.tagName.toLowerCase() + (e.className ? '.' + e.className : '') + (e.id ? '#' + e.id : ''));\
                   problems.push('scrolls sideways: ' + root.scrollWidth + ' > ' + root.clientWidth + ', past the edge: ' + wide.slice(0, 8).join(' '));\
                 }\
                 const rgb = c => (c.match(/[\\d.]+/g) || ['0', '0', '0', '0']).map(Number);\
                 const channel = v => { v /= 255; return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };\
                 const lum = c => 0.2126 * channel(c[0]) + 0.7152 * channel(c[1]) + 0.0722 * channel(c[2]);\
                 const backdrop = e => {\
                   for (let n = e; n; n = n.parentElement) {\
                     const b = rgb(getComputedStyle(n).backgroundColor);\
                     if (b.length < 4 || b[3] > 0) return b;\
                   }\
                   return [255, 255, 255];\
                 };\
                 for (const el of document.body.querySelectorAll('*')) {\
                   if (el.closest('svg')) continue;\
                   const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim() !== '');\
                   if (!own || el.getClientRects().length === 0) continue;\
                   const s = getComputedStyle(el);\
                   if (s.visibility === 'hidden') continue;\
                   const [hi, lo] = [lum(rgb(s.color)), lum(backdrop(el))].sort((a, b) => b - a);\
                   const ratio = (hi + 0.05) / (lo + 0.05);\
                   const size = parseFloat(s.fontSize);\
                   const needed = size >= 24 || (parseInt(s.fontWeight, 10) >= 700 && size >= 18.66) ? 3 : 4.5;\
                   if (ratio < needed) problems.push('contrast ' + ratio.toFixed(2) + ' below ' + needed + ': ' + el.outerHTML.slice(0, 120));\
                 }\
                 return problems;",
            )
            .await;
        found.as_array().map(|a| a.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect()).unwrap_or_default()
    }
}
