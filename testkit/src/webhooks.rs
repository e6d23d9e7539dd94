//! A real webhook receiver on loopback for one test (Python's `http.server`), recording what
//! it gets; and an independent check of Standard Webhooks signatures by the `standardwebhooks`
//! package from PyPI, which `./dev test` installs into its venv (`TEST_WEBHOOK_PYTHON`).

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const SCRIPT: &str = include_str!("webhook_receiver.py");

/// One request the receiver got.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct Received {
    pub path: String,
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: String,
    /// What the receiver answered.
    pub status: u16,
    /// Requests to the same path in flight when this one arrived, itself included.
    pub concurrent: u32,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or_default()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

pub struct WebhookReceiver {
    pub port: u16,
    log: PathBuf,
    child: Child,
}

fn python() -> String {
    std::env::var("TEST_WEBHOOK_PYTHON").unwrap_or_else(|_| "python3".into())
}

impl WebhookReceiver {
    pub async fn start() -> anyhow::Result<Self> {
        let log = std::env::temp_dir().join(crate::unique("webhooks"));
        std::fs::write(&log, "")?;
        let mut child = Command::new(python())
            .args(["-c", SCRIPT])
            .arg(&log)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let port = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        })
        .await??
        .trim()
        .parse()?;
        Ok(Self { port, log, child })
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Everything received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// What arrived at `path` once `filter` holds for at least `count` (waiting up to
    /// `within`), or what there is then.
    pub async fn wait_for(
        &self,
        path: &str,
        count: usize,
        within: Duration,
        filter: impl Fn(&Received) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got: Vec<Received> = self
                .received()
                .into_iter()
                .filter(|r| r.path == path && filter(r))
                .collect();
            if got.len() >= count || Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Whether the `standardwebhooks` package accepts each record's signature under `secret`.
pub fn verify_independently(secret: &str, records: &[Received]) -> anyhow::Result<Vec<bool>> {
    let mut child = Command::new(python())
        .args(["-c", SCRIPT, "verify"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let input = serde_json::json!({ "secret": secret, "records": records });
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?
        .write_all(input.to_string().as_bytes())?;
    let output = child.wait_with_output()?;
    anyhow::ensure!(
        output.status.success(),
        "the standardwebhooks check failed (is the package installed for {}? `./dev test` puts it in its venv): {}",
        python(),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}
