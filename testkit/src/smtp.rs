//! A real SMTP server on loopback for one test: aiosmtpd (Debian's `python3-aiosmtpd`, which
//! `./dev test` installs), keeping every message it accepts as a file of a Maildir of the
//! test's own. It can be stopped and started again on the same port, for outage tests.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct SmtpSink {
    pub port: u16,
    pub maildir: PathBuf,
    child: Option<Child>,
}

impl SmtpSink {
    /// Starts a server on a free port, once it accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let maildir = std::env::temp_dir().join(crate::unique("maildir"));
        // A Maildir: aiosmtpd writes to `tmp/` and moves each message to `new/`.
        for part in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(maildir.join(part))?;
        }
        let mut sink = Self {
            port,
            maildir,
            child: None,
        };
        sink.resume().await?;
        Ok(sink)
    }

    /// `smtp://127.0.0.1:<port>`: plain SMTP, as a server on loopback is reached.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Stops the server: connections are refused until [`resume`](Self::resume).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and Maildir.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        self.stop();
        // Debian's own Python, which has Debian's aiosmtpd, even where another python3 comes
        // first on the PATH.
        let python = std::env::var("TEST_SMTP_PYTHON").unwrap_or_else(|_| {
            if std::path::Path::new("/usr/bin/python3").exists() {
                "/usr/bin/python3"
            } else {
                "python3"
            }
            .into()
        });
        let child = Command::new(&python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&self.maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot start aiosmtpd with {python} ({e}); `./dev test` installs python3-aiosmtpd"
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            anyhow::ensure!(
                Instant::now() < deadline,
                "aiosmtpd did not listen on {} within 15 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Every message received so far, as sent (with aiosmtpd's `X-MailFrom`/`X-RcptTo`).
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.maildir.join("new"))
            .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
    }

    /// The messages to `recipient` once there are at least `count` (waiting up to `within`),
    /// or what there is then.
    pub async fn wait_for(&self, recipient: &str, count: usize, within: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + within;
        loop {
            let header = format!("X-RcptTo: {recipient}").to_ascii_lowercase();
            let to_recipient: Vec<Vec<u8>> = self
                .messages()
                .into_iter()
                .filter(|m| {
                    String::from_utf8_lossy(m)
                        .to_ascii_lowercase()
                        .lines()
                        .any(|l| l.trim_end() == header)
                })
                .collect();
            if to_recipient.len() >= count || Instant::now() >= deadline {
                return to_recipient;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.maildir);
    }
}
