//! A real HTTPS receiver: a self-signed leaf certificate made by `openssl` for
//! `127.0.0.1`, served by Python's `http.server` wrapped in `ssl`. Every request is
//! recorded (path, headers, body bytes) and answered `204`. Nothing here is faked: the
//! client under test does a real TLS handshake and must verify the certificate.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use base64::Engine as _;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: serde_json::Map<String, serde_json::Value>,
    pub body: Vec<u8>,
}

impl Seen {
    /// A header's value; header names are matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_str())
    }
}

pub struct TlsReceiver {
    /// The certificate (PEM) to trust as `ca_file`.
    pub cert: PathBuf,
    pub port: u16,
    seen: Arc<(Mutex<Vec<Seen>>, Condvar)>,
    child: Child,
    _dir: tempfile::TempDir,
}

const SERVER: &str = r#"
import base64, http.server, json, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('content-length', 0)))
        print(json.dumps({'path': self.path, 'headers': dict(self.headers),
                          'body': base64.b64encode(body).decode()}), flush=True)
        self.send_response(204); self.end_headers()
    def log_message(self, *a): pass
s = http.server.HTTPServer(('127.0.0.1', 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[1], sys.argv[2])
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

impl TlsReceiver {
    /// Starts one; `None` (with a SKIPPED line) when `openssl` or `python3` is missing,
    /// which fails the test under CI instead.
    pub fn start() -> Option<TlsReceiver> {
        let tools = ["openssl", "python3"]
            .iter()
            .all(|t| Command::new(t).arg("--version").output().is_ok());
        if !tools {
            super::ci::skip_or_fail("the TLS receiver", "openssl or python3 is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let made = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1"])
            // A self-signed leaf, not a CA: webpki refuses a CA certificate as a server's.
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-addext", "extendedKeyUsage=serverAuth"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(SERVER)
            .arg(&cert)
            .arg(&key)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("port");
        let port = line.trim().parse().expect("the receiver prints its port");
        let seen = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { return };
                let v: serde_json::Value = serde_json::from_str(&line).expect("request line");
                let (list, changed) = &*sink;
                list.lock().unwrap().push(Seen {
                    path: v["path"].as_str().unwrap_or_default().to_owned(),
                    headers: v["headers"].as_object().cloned().unwrap_or_default(),
                    body: base64::engine::general_purpose::STANDARD
                        .decode(v["body"].as_str().unwrap_or_default())
                        .expect("base64 body"),
                });
                changed.notify_all();
            }
        });
        Some(TlsReceiver {
            cert,
            port,
            seen,
            child,
            _dir: dir,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// The requests recorded so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.0.lock().unwrap().clone()
    }

    /// The requests, once at least `n` are recorded (requests are recorded by a thread
    /// reading the receiver's output, so not always before the client sees the answer); panics after 10 s.
    pub fn wait_for(&self, n: usize) -> Vec<Seen> {
        let (list, changed) = &*self.seen;
        let (list, timeout) = changed
            .wait_timeout_while(list.lock().unwrap(), Duration::from_secs(10), |l| {
                l.len() < n
            })
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "{} of {n} requests arrived",
            list.len()
        );
        list.clone()
    }
}

impl Drop for TlsReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
