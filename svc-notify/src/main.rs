//! svc-notify: serves notifications and preferences, and sends what events call for.

use svc_notify::{Application, config::Config};
use ticketing_platform::{config, server::shutdown_signal, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = config::load(Config::default())?;
    let _telemetry = telemetry::init(&config.log, "notify", env!("CARGO_PKG_VERSION"));
    let app = Application::build(config).await?;
    app.run_until_stopped(shutdown_signal()).await
}
