//! svc-identity: `svc-identity` serves; `svc-identity seed-demo` writes demo accounts (password
//! from `TICKETING_DEMO_PASSWORD`) and exits.

use svc_identity::{Application, config::Config};
use ticketing_platform::{config, server::shutdown_signal, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = config::load(Config::default())?;
    let _telemetry = telemetry::init(&config.log, "identity", env!("CARGO_PKG_VERSION"));
    match std::env::args().nth(1).as_deref() {
        None | Some("serve") => {
            let app = Application::build(config).await?;
            app.run_until_stopped(shutdown_signal()).await
        }
        Some("seed-demo") => {
            let password = std::env::var("TICKETING_DEMO_PASSWORD")
                .map_err(|_| anyhow::anyhow!("set TICKETING_DEMO_PASSWORD to the demo accounts' password"))?;
            svc_identity::demo::seed(&config, &password).await
        }
        Some(other) => anyhow::bail!("unknown command `{other}`; use `serve` (default) or `seed-demo`"),
    }
}
