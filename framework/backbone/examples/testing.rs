//! Run with `cargo run -p backbone-cli -- dev up` in one terminal, then in another
//! `BACKBONE_PROFILE=development cargo run -p backbone --example testing`.
//!
//! Testing your service: start it against a real broker (in tests, `backbone-testkit` starts one per
//! test binary: `backbone_testkit::shared_kafka()`), drive it, and assert what it published with a
//! `testing::Probe`: "this event, with this key, on this topic", decoded as a handler would. This
//! example does in `main` what a `#[tokio::test]` would.

use std::time::Duration;

use backbone::app::App;
use backbone::testing::Probe;
use backbone::{Config, HandlerError, Json, Key, Outgoing, Publisher, State, TopicSpec};

#[derive(serde::Deserialize, serde::Serialize, Debug, PartialEq)]
struct Greeting {
    text: String,
}

#[derive(Clone)]
struct Greeter {
    greetings: TopicSpec,
}

/// The service under test: greets every name it is sent.
async fn greet(Key(name): Key<String>, State(g): State<Greeter>, out: Publisher) -> Result<(), HandlerError> {
    let body =
        serde_json::to_vec(&Greeting { text: format!("hello, {name}") }).map_err(HandlerError::permanent)?;
    out.publish(&g.greetings, Outgoing::new("Greeting", name.as_bytes(), &body)).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let service = format!("greeter{:06x}", fastrand::u32(..0xff_ffff));
    let names = TopicSpec::public(&service, "name", 1).partitions(2).build()?;
    let greetings = TopicSpec::public(&service, "greeting", 1).partitions(2).build()?;
    let config = Config::from_env(&service)?;
    let started = App::new(&service)
        .owns(&names)
        .owns(&greetings)
        .consume(&names, greet)
        .start(&config, Greeter { greetings: greetings.clone() })
        .await?;
    started.ready().await;

    // The test: a probe on the output, then the input, then the assertion.
    let probe = Probe::new(&config, &greetings).await?;
    started.publisher().publish(&names, Outgoing::new("Name", b"ada", b"")).await?;
    let Json(greeting): Json<Greeting> = probe.expect_event("ada", Duration::from_secs(60)).await?;
    assert_eq!(greeting, Greeting { text: "hello, ada".into() });
    println!("published to {greetings} with key ada: {greeting:?}");
    started.shutdown().await?;
    Ok(())
}
