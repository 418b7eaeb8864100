//! The Orders service: configuration from the environment (`KAFKA_BOOTSTRAP_SERVERS`,
//! `SCHEMA_REGISTRY_URL`, `BACKBONE_PROFILE`, `BACKBONE_HTTP_ADDR` …), JSON logs, graceful
//! shutdown on SIGTERM or Ctrl-C.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    orders::init_logging();
    let config = match backbone::Config::from_env("orders") {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(error = %e, "configuration");
            return std::process::ExitCode::FAILURE;
        }
    };
    match orders::run(&config, backbone::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "orders stopped");
            std::process::ExitCode::FAILURE
        }
    }
}
