//! Schemathesis (from PyPI) reads the gateway's own `/openapi.json` and throws generated valid
//! and invalid requests at every operation of the running services: none may get a 5xx.

use std::process::Stdio;

use ticketing_platform::auth::Role;

use crate::helpers::stack;

/// The schemathesis CLI: `$SCHEMATHESIS` (set by `./dev test`, which installs it), else `st` on
/// the PATH.
fn schemathesis() -> String {
    std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "st".into())
}

/// openapi-spec-validator (PyPI): `$OPENAPI_SPEC_VALIDATOR` (set by `./dev test`), else on the PATH.
fn spec_validator() -> String {
    std::env::var("OPENAPI_SPEC_VALIDATOR").unwrap_or_else(|_| "openapi-spec-validator".into())
}

/// Runs a tool (off the runtime's threads): whether it succeeded, and what it printed.
async fn run(mut command: std::process::Command, setting: &'static str) -> (bool, String) {
    let program = command.get_program().to_string_lossy().to_string();
    let output = tokio::task::spawn_blocking(move || command.stdin(Stdio::null()).output())
        .await
        .expect("joined")
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}); `./dev test` installs it, or set {setting} to it")
        });
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_valid_openapi_3() {
    let s = stack().await;
    let document = s
        .http
        .get(format!("{}/openapi.json", s.base))
        .send()
        .await
        .expect("served");
    let bytes = document.bytes().await.expect("body");
    let path = std::env::temp_dir().join(format!("openapi-{}.json", uuid::Uuid::now_v7()));
    std::fs::write(&path, &bytes).expect("written");
    let mut command = std::process::Command::new(spec_validator());
    command
        .args(["--errors", "all", "--validation-errors", "all"])
        .arg(&path);
    let (ok, report) = run(command, "OPENAPI_SPEC_VALIDATOR").await;
    let _ = std::fs::remove_file(&path);
    assert!(ok, "the document is not valid OpenAPI:\n{report}");
    assert!(report.contains("OK"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_against_the_openapi_document_never_get_a_5xx() {
    let s = stack().await;
    let (_, token) = s.identity.user(&[Role::Customer]).await;
    let base = s.base.clone();
    // Schemathesis keeps its example database and reports in the working directory.
    let workdir = std::env::temp_dir().join(format!("schemathesis-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&workdir).expect("work directory");
    let mut command = std::process::Command::new(schemathesis());
    command
        .args([
            "--no-color",
            "run",
            &format!("{base}/openapi.json"),
            "--checks",
            "not_a_server_error",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "12",
            "--seed",
            "20261201",
            "--workers",
            "2",
            "--request-timeout",
            "10",
            // Streams never end (the routes are covered by the SSE tests); reports is not
            // running in this stack, so its routes answer 503 by design.
            "--exclude-path-regex",
            r":watch$|/reports/",
            "--header",
            &format!("Authorization: Bearer {token}"),
            "--suppress-health-check",
            "all",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(&workdir);
    let (ok, report) = run(command, "SCHEMATHESIS").await;
    let _ = std::fs::remove_dir_all(&workdir);
    assert!(ok, "schemathesis found failures:\n{report}");
    // It really ran: the summary counts the cases it generated, and none errored.
    assert!(report.contains("generated"), "{report}");
    assert!(!report.contains("Errored:"), "{report}");
    eprintln!("{report}");
}
