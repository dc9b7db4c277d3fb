//! The web console in a real headless browser (Debian's chromium, driven by chromedriver over
//! the WebDriver protocol; `scripts/test.sh` installs both): against a three-node cluster
//! with an admin credential, the page lists the three members, its charts take a sample every
//! 2 s, a killed node turns `down` within the failure-detection time, and the invalidate form
//! removes a key (checked over RESP) only with the right credential. The page is saved as
//! `target/test-artifacts/console.png`.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use strata_tests::*;

const TOKEN: &str = "console test admin token";

/// A chromedriver process and one headless session, both ended on drop.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

impl Browser {
    fn start() -> Self {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver (apt-get install chromium chromium-driver; scripts/test.sh does)",
            );
        let mut b = Browser {
            driver,
            port,
            session: String::new(),
        };
        let started = Instant::now();
        let created = loop {
            match b.try_call(
                "POST",
                "/session",
                Some(json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {"args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1400,1200"
                ]}}}})),
            ) {
                Some(v) => break v,
                None if started.elapsed() < Duration::from_secs(20) => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                None => panic!("chromedriver did not answer"),
            }
        };
        b.session = created["value"]["sessionId"].as_str().unwrap().to_owned();
        b
    }

    /// One WebDriver call: the response's JSON, or `None` when the driver is not listening.
    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Option<Value> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .ok()?;
        // chromedriver keeps the connection open: read the headers, then Content-Length bytes.
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).ok()? == 0 {
                return None;
            }
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))?
            .trim()
            .parse()
            .ok()?;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).ok()?;
        serde_json::from_slice(&body).ok()
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let v = self
            .try_call(method, &format!("/session/{}{path}", self.session), body)
            .expect("chromedriver answered");
        assert!(v["value"]["error"].is_null(), "{path}: {v}");
        v["value"].clone()
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` in the page (with `args`) and returns its value.
    fn eval(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Polls `script` until it returns true, up to `limit`; how long it took.
    fn until(&self, what: &str, limit: Duration, script: &str, args: Value) -> Duration {
        let start = Instant::now();
        loop {
            if self.eval(script, args.clone()) == json!(true) {
                return start.elapsed();
            }
            assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&self, name: &str) {
        use base64::Engine as _;
        let png = self.call("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.try_call("DELETE", &format!("/session/{}", self.session), None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn the_console_shows_the_cluster_live_and_its_actions_need_the_credential() {
    let (mut nodes, _dirs) = three_nodes(&format!(
        "expected_size = 3\n[server]\nadmin_token = \"{TOKEN}\"\n"
    ));
    let mut c = nodes[0].redis();
    let _: () = redis::cmd("SET")
        .arg("victim")
        .arg("v")
        .query(&mut c)
        .unwrap();
    let b = Browser::start();
    b.go(&format!("http://{}/", nodes[0].admin()));
    // Without the credential the page says so; with it, it reads the cluster.
    b.until(
        "the page asks for the credential",
        Duration::from_secs(10),
        "return document.getElementById('status-line').textContent.includes('401')",
        json!([]),
    );
    let set_token = "const t = document.getElementById('token'); t.value = arguments[0]; \
                     t.dispatchEvent(new Event('change')); return true;";
    b.eval(set_token, json!([TOKEN]));
    b.until(
        "three members listed",
        Duration::from_secs(10),
        "return document.querySelectorAll('#members tbody tr').length === 3",
        json!([]),
    );
    let states = b.eval(
        "return [...document.querySelectorAll('#members tbody tr')].map(r => r.className)",
        json!([]),
    );
    assert_eq!(states, json!(["self", "alive", "alive"]), "{states}");
    // Each peer's RPC round trip is a number of milliseconds.
    b.until(
        "round trips shown",
        Duration::from_secs(10),
        "return [...document.querySelectorAll('#members tbody tr')].slice(1) \
           .every(r => /^[0-9.]+$/.test(r.cells[7].textContent))",
        json!([]),
    );
    let shares = b.eval(
        "return [...document.querySelectorAll('#members tbody tr')].map(r => r.cells[6].textContent)",
        json!([]),
    );
    assert!(
        shares
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s.as_str().unwrap().ends_with('%')),
        "{shares}"
    );
    // The charts take a sample every 2 s, and show the load.
    let samples = "return Number(document.getElementById('chart-commands').dataset.samples || 0)";
    let before = b.eval(samples, json!([])).as_u64().unwrap();
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(4_500));
    let after = b.eval(samples, json!([])).as_u64().unwrap();
    assert!(after >= before + 2, "chart samples {before} -> {after}");
    b.eval(
        "return document.querySelectorAll('#layers tbody tr').length > 0",
        json!([]),
    );
    // Keys per namespace and layer, counted on demand: node 1's L1 holds copies of what was
    // written through it (201 keys at most).
    b.eval(
        "document.getElementById('count-keys').click(); return true;",
        json!([]),
    );
    b.until(
        "db0's keys counted",
        Duration::from_secs(10),
        "const r = document.querySelector('#namespaces tbody tr[data-ns=\"db0\"]'); \
         return r !== null && r.cells[6].textContent !== ''",
        json!([]),
    );
    let l1_keys = b.eval(
        "return document.querySelector('#namespaces tbody tr[data-ns=\"db0\"]').cells[6].textContent",
        json!([]),
    );
    println!("db0 keys in n1's L1, as the console counts them: {l1_keys}");
    assert!(
        l1_keys.as_str().unwrap().parse::<u64>().is_ok(),
        "{l1_keys}"
    );
    b.screenshot("console.png");

    // A killed member stands out as down within failure detection (about 5 s here).
    nodes[2].kill9();
    let took = b.until(
        "the killed member shown down",
        Duration::from_secs(20),
        "const r = document.querySelector('#members tbody tr[data-name=\"n3\"]'); \
         return r !== null && r.className === 'down'",
        json!([]),
    );
    println!("n3 shown down {took:?} after kill -9");
    b.screenshot("console-node-down.png");

    // The invalidate form: refused with a wrong credential, done with the right one.
    let submit = "window.confirm = () => true; \
        document.getElementById('act-kind').value = 'key'; \
        document.getElementById('act-ns').value = 'db0'; \
        document.getElementById('act-target').value = arguments[0]; \
        document.getElementById('act-result').textContent = ''; \
        document.getElementById('act').requestSubmit(); return true;";
    let result = "return document.getElementById('act-result').textContent";
    b.eval(set_token, json!(["not the token"]));
    b.eval(submit, json!(["victim"]));
    b.until(
        "the refusal shown",
        Duration::from_secs(10),
        "return document.getElementById('act-result').textContent.startsWith('refused')",
        json!([]),
    );
    let v: Option<String> = redis::cmd("GET").arg("victim").query(&mut c).unwrap();
    assert_eq!(
        v.as_deref(),
        Some("v"),
        "nothing removed without the credential"
    );
    b.eval(set_token, json!([TOKEN]));
    b.eval(submit, json!(["victim"]));
    b.until(
        "the removal shown",
        Duration::from_secs(10),
        "return document.getElementById('act-result').textContent === 'removed 1'",
        json!([]),
    );
    let v: Option<String> = redis::cmd("GET").arg("victim").query(&mut c).unwrap();
    assert_eq!(v, None, "removed: {}", b.eval(result, json!([])));

    // A link from elsewhere may open the console's page (a navigation to a file without
    // data); nothing else comes through from another site, the count included.
    let admin = nodes[0].admin();
    let bearer = format!("Bearer {TOKEN}");
    let cross = [
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Mode", "navigate"),
    ];
    assert_eq!(http(&admin, "GET", "/", &cross).0, 200);
    let with_token = [
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Mode", "navigate"),
        ("Authorization", bearer.as_str()),
    ];
    assert_eq!(http(&admin, "GET", "/status", &with_token).0, 403);
    let post = [
        ("Origin", "http://evil.example"),
        ("Authorization", bearer.as_str()),
    ];
    assert_eq!(http(&admin, "POST", "/namespaces/count", &post).0, 403);
    assert_eq!(
        http(
            &admin,
            "POST",
            "/namespaces/count",
            &[("Authorization", bearer.as_str())]
        )
        .0,
        200
    );
}
