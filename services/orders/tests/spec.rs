//! `orders --spec`: the binary prints its declaration and exits, needing no Kafka and no
//! configuration.

use std::process::Command;

use backbone::ServiceSpec;

#[test]
fn the_binary_prints_its_spec_without_configuration() {
    let output = Command::new(env!("CARGO_BIN_EXE_orders"))
        .arg("--spec")
        // No broker, no registry: nothing may be read from the environment or connected to.
        .env_clear()
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "exit {:?}: {}", output.status, String::from_utf8_lossy(&output.stderr));

    let spec = ServiceSpec::from_json(&stdout).unwrap();
    assert_eq!(spec, orders::app().spec().unwrap(), "the binary prints the library's declaration");
    assert_eq!(spec.name(), "orders");
    let owned = spec.produces();
    assert!(owned.contains(&"orders.public.order-v1"), "{owned:?}");
    assert!(owned.contains(&"orders.private.dlq.stock.public.order-validation-v1"), "{owned:?}");
    let consumed: Vec<&str> = spec.consumed_topics().iter().map(|t| t.name()).collect();
    assert!(consumed.contains(&"stock.public.order-validation-v1"), "{consumed:?}");
    assert_eq!(spec.quotas(), &orders::QUOTAS);
    assert!(
        spec.consumers().iter().any(|c| c.group == "orders.record_validation"
            && c.exactly_once
            && c.topic == "stock.public.order-validation-v1"),
        "{:?}",
        spec.consumers()
    );
    assert!(
        spec.expects()
            .iter()
            .any(|e| e.record == "backbone.stock.v1.OrderValidation" && e.key.as_deref() == Some("string")),
        "{:?}",
        spec.expects()
    );
}
