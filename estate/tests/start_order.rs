//! The service binaries' start-up (`App::run_with`, which waits for input topics) on the real
//! broker: Orders started before Stock provisions its own topics and waits for Stock's instead of failing; once Stock
//! runs, both serve and become ready; both stop cleanly on their shutdown signal.

use std::time::Duration;

use backbone::provision::{Action, Provisioner};
use backbone::{Config, Profile};
use backbone_testkit::{shared_kafka, shared_registry};

const WITHIN: Duration = Duration::from_secs(120);

fn config(port: u16) -> Config {
    let mut config = Config::default();
    config.bootstrap_servers = shared_kafka().bootstrap_servers().to_owned();
    config.schema_registry_url = shared_registry().url().to_owned();
    config.profile = Profile::Development;
    config.http_addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    config
}

fn free_port() -> u16 {
    // Freed just before use: another process could take it meanwhile, but hardly does.
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn exists(config: &Config, topic: &backbone::TopicSpec) -> bool {
    let plan =
        Provisioner::new(config, "estate-test").unwrap().plan(std::slice::from_ref(topic)).await.unwrap();
    !plan.actions_for(topic.name()).any(|a| matches!(a, Action::Create { .. }))
}

/// Polls `url` until it answers 200 (nothing to await from outside the service's process).
async fn ready(http: &reqwest::Client, url: &str) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        if let Ok(response) = http.get(url).send().await
            && response.status() == 200
        {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{url} not ready within {WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_waits_for_stocks_topics_then_both_serve_and_stop_cleanly() {
    let (orders_config, stock_config) = (config(free_port()), config(free_port()));
    let validations = orders::VALIDATIONS.spec().unwrap();
    let own = orders::ORDERS.spec().unwrap();
    let fresh = !exists(&orders_config, &validations).await;

    let (stop_orders, orders_stopped) = tokio::sync::oneshot::channel::<()>();
    let orders = tokio::spawn({
        let config = orders_config.clone();
        async move {
            let stopped = async move {
                let _ = orders_stopped.await;
            };
            orders::app().run_with(&config, orders::make_state, stopped).await
        }
    });
    let http = reqwest::Client::new();
    let orders_ready = format!("http://{}/readyz", orders_config.http_addr);
    if fresh {
        // Orders provisions its own topic, then waits: it neither serves nor fails.
        let deadline = tokio::time::Instant::now() + WITHIN;
        while !exists(&orders_config, &own).await {
            assert!(tokio::time::Instant::now() < deadline, "orders never provisioned its topic");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(!exists(&orders_config, &validations).await, "stock's topic does not exist yet");
        assert!(http.get(&orders_ready).send().await.is_err(), "not serving while it waits");
        assert!(!orders.is_finished(), "waiting, not failed");
    } else {
        eprintln!("stock's topics exist already (an external broker?): the waiting is not observable");
    }

    let (stop_stock, stock_stopped) = tokio::sync::oneshot::channel::<()>();
    let stock = tokio::spawn({
        let config = stock_config.clone();
        async move {
            let (app, state) = stock::app_and_state();
            let stopped = async move {
                let _ = stock_stopped.await;
            };
            app.run_with(&config, state, stopped).await
        }
    });
    ready(&http, &orders_ready).await;
    ready(&http, &format!("http://{}/readyz", stock_config.http_addr)).await;
    let health = http.get(format!("http://{}/healthz", orders_config.http_addr)).send().await.unwrap();
    assert_eq!(health.status(), 200);

    stop_orders.send(()).unwrap();
    stop_stock.send(()).unwrap();
    tokio::time::timeout(WITHIN, orders).await.expect("orders stops").unwrap().expect("cleanly");
    tokio::time::timeout(WITHIN, stock).await.expect("stock stops").unwrap().expect("cleanly");
}
