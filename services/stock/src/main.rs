//! The Stock service: configuration from the environment (`KAFKA_BOOTSTRAP_SERVERS`,
//! `SCHEMA_REGISTRY_URL`, `BACKBONE_PROFILE`, `BACKBONE_HTTP_ADDR` …), JSON logs, graceful
//! shutdown on SIGTERM or Ctrl-C ([`backbone::app::App::main_with`]).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let (app, state) = stock::app_and_state();
    app.main_with(state).await
}
